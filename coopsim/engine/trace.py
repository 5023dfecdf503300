"""A timeline of device ops and link transfers, as a Chrome trace (``ctx.sim.trace``).

The file is Chrome's trace-event JSON, which https://ui.perfetto.dev and chrome://tracing open:
an object whose ``"traceEvents"`` list holds

- ``"M"`` metadata events naming each process and thread (track): one process per device
  (``pid`` = device index) and, if any link joins two non-device vertices (switch to switch),
  one ``network`` process after them; in a device's process, thread 0 is its ``stream`` and
  the others are the links that leave it (a link that leaves a switch shows under the device
  it enters);
- ``"X"`` complete events: one per stream op (from the moment the stream starts it to its
  completion) and one per transfer on every link of its route (from the transfer's start,
  latency included, to its last byte), ``ts`` and ``dur`` in virtual microseconds;
- ``"i"`` instant events for zero-duration stream ops (event records, stream waits).

``args`` say what a slice is: for a collective's op on a stream, ``collective``, ``seq`` (its
sequence number in its group), ``group``, ``algorithm``, ``model`` and ``bytes`` (the message, as
nccl-tests counts it); every transfer has ``bytes`` (what it moves), ``route`` and
``latency_ns``, and one of a collective's schedule also the collective's fields (its message
size as ``collective_bytes``), ``step``, ``src_rank`` and ``dst_rank`` (global ranks).

Invariants:
- slices on one track never overlap: a stream starts an op when the previous one has ended,
  and transfers that cross one link at the same time go to separate lanes of that link
  (``link dev0->switch``, ``link dev0->switch #2`` ...), filled first-fit in start order;
- nothing is recorded, and nothing costs more than one attribute check, unless a recorder is
  attached: ``Stream.trace`` and ``Network.trace`` are None otherwise;
- the same run gives the same file (C9): slices are kept in completion order, which the
  engine makes deterministic, and written sorted by time, then process, then track.
"""

from __future__ import annotations

import json

US_PER_NS = 1e-3


class TraceRecorder:
    """Records what starts on a context's streams and links while it is attached.

    ``with ctx.sim.trace(path):`` attaches on entry, and on exit detaches and writes ``path``
    (also when the block raises: a trace of a failed run is the one you want to see).
    ``attach``/``detach``/``events``/``write`` are there for tools that record several windows
    (coopsim.bench). Ops still running at exit have no end and are left out.
    """

    def __init__(self, rt, path=None):
        """``rt``: the runtime port (its ``engine``, ``devices``, ``network``, ``topology``)."""
        self._rt = rt
        self.path = path
        self._device_of = {dev.stream: dev.index for dev in rt.devices}
        self._named: dict = {}  # a named stream -> (device index, its track), once seen
        names = {d.name: d.index for d in rt.topology.devices}
        # a link's process: the device it leaves, else the device it enters, else "network"
        self._owner = {}
        for link in rt.topology.links:
            owner = names.get(link.src, names.get(link.dst))
            self._owner[link.index] = rt.topology.num_devices if owner is None else owner
        self._slices: list[tuple] = []  # (pid, track, start_ns, end_ns, name, args)
        self._labels: dict = {}  # transfer Handle -> args given by ``label``

    # -- attaching --------------------------------------------------------------------------

    def attach(self) -> "TraceRecorder":
        network = self._rt.network
        if network.trace is not None:
            raise RuntimeError("a trace is already recording on this context; end it (leave "
                               "its `with ctx.sim.trace(...)` block) before starting another")
        network.settle()  # a closed-form run in flight records its transfers from here on (ADR-0031)
        network.trace = self
        for dev in self._rt.devices:
            for stream in dev.all_streams():  # a stream named later inherits the default's
                stream.trace = self
        return self

    def detach(self) -> None:
        if self._rt.network.trace is self:
            self._rt.network.trace = None
            for dev in self._rt.devices:
                for stream in dev.all_streams():
                    stream.trace = None

    def __enter__(self) -> "TraceRecorder":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()
        if self.path is not None:
            self.write(self.path)

    # -- hooks (called by Stream, Network and TimedRun while attached) ----------------------

    def stream_op(self, stream, op, duration_ns: float) -> None:
        """An op of known duration was enqueued: it starts ``duration_ns`` before its end."""
        dev, track = self._place(stream)

        def done(h):
            self._slices.append((dev, track, h.time_ns - duration_ns, h.time_ns, h.desc, {}))

        op.add_callback(done)

    def stream_work(self, stream, op, work, delay_ns: float) -> None:
        """An op of unknown duration has just begun its ``work`` (a collective's or p2p's part),
        ``delay_ns`` (the launch overhead) after the stream started it."""
        dev, track = self._place(stream)
        start_ns = self._rt.engine.now_ns - delay_ns

        def done(h):
            name, args = _work_args(h.desc, work)
            self._slices.append((dev, track, start_ns, h.time_ns, name, args))

        op.add_callback(done)

    def _place(self, stream) -> tuple:
        """(device index, track) of a stream's slices: track 0 is the default stream, a
        named stream has its own ``("stream", name)`` track."""
        dev = self._device_of.get(stream)
        if dev is not None:
            return dev, 0
        place = self._named.get(stream)
        if place is None:  # first op of a named stream: found once, then remembered
            place = self._named[stream] = next(
                (d.index, ("stream", name)) for d in self._rt.devices
                for name, named in d.streams.items() if named is stream)
        return place

    def transfer(self, t) -> None:
        """A transfer started (``coopsim.engine.network.Transfer``)."""

        def done(h):
            label = self._labels.pop(h, None)
            args = {"bytes": t.nbytes, "route": [link.name for link in t.route],
                    "latency_ns": t.latency_ns}
            name = h.desc
            if label is not None:
                args.update(label)
                name = (f"{label['collective']} #{label['seq']} step {label['step']}: "
                        f"rank {label['src_rank']} -> rank {label['dst_rank']}")
            for link in t.route:
                self._slices.append((self._owner[link.index], link, t.start_ns, h.time_ns, name, args))

        t.handle.add_callback(done)

    def label(self, handle, collective, step: int, src: int, dst: int) -> None:
        """Say which collective, step and (group-local) ranks a transfer belongs to."""
        args = _collective_args(collective)
        if "bytes" in args:  # a transfer's own "bytes" is what it moves
            args["collective_bytes"] = args.pop("bytes")
        ranks = collective.group.ranks
        args.update(step=step, src_rank=ranks[src], dst_rank=ranks[dst])
        self._labels[handle] = args

    # -- output -----------------------------------------------------------------------------

    def events(self, pid_offset: int = 0, process_prefix: str = "",
               ts_offset_ns: float = 0.0) -> list[dict]:
        """The trace events recorded so far; ``pid_offset``, ``process_prefix`` and
        ``ts_offset_ns`` let a tool put the traces of several contexts in one file."""
        topology = self._rt.topology
        lanes: dict = {}  # (pid, link index) -> end_ns of each lane
        placed = []
        order = sorted(range(len(self._slices)), key=lambda i: (self._slices[i][2], i))
        for i in order:
            pid, track, start, end, name, args = self._slices[i]
            if track != 0 and not isinstance(track, tuple):  # a Link: placed in a free lane
                ends = lanes.setdefault((pid, track.index), [])
                lane = next((k for k, e in enumerate(ends) if e <= start), len(ends))
                if lane == len(ends):
                    ends.append(end)
                else:
                    ends[lane] = end
                track = (track.index, lane, track.name)
            placed.append((pid, track, start, end, name, args))
        tids = {}  # (pid, track) -> tid: stream first, then links by index and lane
        per_pid: dict = {}
        for pid, track in sorted({(p, t) for p, t, *_ in placed}, key=_track_order):
            tids[pid, track] = per_pid[pid] = per_pid.get(pid, -1) + 1
        events = []
        for pid in sorted({p for p, _ in tids}):
            if pid < topology.num_devices:
                d = topology.devices[pid]
                pname = f"{process_prefix}cuda:{pid} ({d.name}, {d.kind.name})"
            else:
                pname = f"{process_prefix}network"
            events.append({"ph": "M", "name": "process_name", "pid": pid + pid_offset,
                           "args": {"name": pname}})
            events.append({"ph": "M", "name": "process_sort_index", "pid": pid + pid_offset,
                           "args": {"sort_index": pid + pid_offset}})
        for (pid, track), tid in tids.items():
            if track == 0:
                tname = "stream"
            elif track[0] == "stream":
                tname = f"stream {track[1]}"
            else:
                tname = f"link {track[2]}" + (f" #{track[1] + 1}" if track[1] else "")
            events.append({"ph": "M", "name": "thread_name", "pid": pid + pid_offset, "tid": tid,
                           "args": {"name": tname}})
            events.append({"ph": "M", "name": "thread_sort_index", "pid": pid + pid_offset,
                           "tid": tid, "args": {"sort_index": tid}})
        timed = []
        for pid, track, start, end, name, args in placed:
            event = {"name": name, "cat": "stream" if track == 0 or track[0] == "stream" else "link",
                     "ph": "X" if end > start else "i", "ts": (start + ts_offset_ns) * US_PER_NS,
                     "pid": pid + pid_offset, "tid": tids[pid, track], "args": args}
            if end > start:
                event["dur"] = (end - start) * US_PER_NS
            else:
                event["s"] = "t"
            timed.append(event)
        timed.sort(key=lambda e: (e["ts"], e["pid"], e["tid"]))
        return events + timed

    def write(self, path) -> None:
        """Write the events recorded so far to ``path`` as a Chrome trace."""
        write_chrome_trace(path, self.events(), topology=self._rt.topology.name)


def write_chrome_trace(path, events: list[dict], **other) -> None:
    """Write ``events`` to ``path`` as a Chrome trace-event JSON file; ``other`` goes to its
    ``otherData`` (shown by the viewers as metadata)."""
    document = {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {"generator": "coopsim", "clock": "virtual time; ts and dur in us", **other},
    }
    with open(path, "w") as f:
        json.dump(document, f, separators=(",", ":"))


def _track_order(pid_track) -> tuple:
    """A device's default stream first, then its named streams by name, then its links by
    index and lane."""
    pid, track = pid_track
    if track == 0:
        return pid, -2, 0, ""
    if track[0] == "stream":
        return pid, -1, 0, track[1]
    return pid, track[0], track[1], ""


def _collective_args(collective) -> dict:
    args = {"collective": collective.kind, "seq": collective.seq, "group": collective.group.name}
    plan = collective.plan
    if plan is not None:
        args.update(algorithm=plan.algorithm, model=collective.state.ccl.model, bytes=plan.nbytes,
                    protocol=plan.protocol.name)
    return args


def _work_args(desc: str, work) -> tuple[str, dict]:
    """Name and args of a stream op whose work is a collective's or p2p's part."""
    collective = getattr(work, "collective", None)
    if collective is not None:
        args = _collective_args(collective)
        name = f"{collective.kind} #{collective.seq}"
        if "algorithm" in args:
            name += f" ({args['algorithm']})"
        return name, args
    post = getattr(work, "post", None)
    if post is not None:
        return desc, {"bytes": int(post.flat.nbytes), "peer": post.peer, "tag": post.tag}
    return desc, {}
