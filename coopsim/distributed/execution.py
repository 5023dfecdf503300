"""Execution of a planned collective: the analytic model's reference numbers, the timed run
of a schedule on the links (ADR-0008 semantics, ADR-0004/0022 link contention, ADR-0023
protocols and pipelined reduction, ADR-0024 channels over every NIC), and nvls in the switch.

Invariants:
- ``reference`` computes every collective by its definition, reducing in rank order;
- ``TimedRun`` moves data only by the schedule's transfers and writes a member's output
  buffers no later than that member's completion (``Collective.member_done``);
- a ``TimedRun`` that finds the links idle computes its times in closed form
  (``closedform.timeline``, ADR-0031), equal bit for bit to its event model's, and while it
  holds the links' claim it is exactly what the event model would be if replayed (``settle``).
"""

from __future__ import annotations

import numpy as np

from coopsim.distributed.algorithms import chunks
from coopsim.distributed.algorithms.protocols import pipelined_reduce_ns
from coopsim.distributed.blocked import BLOCK_BYTES, all_reduce_blocks, apart, block_moves, fusable
from coopsim.distributed.closedform import Profile, Replay, timeline
from coopsim.distributed.nvls import NvlsRun
from coopsim.distributed.one_element import one_element_all_reduce
from coopsim.engine import Handle


_BUFFERS = ("in", "out", "tmp")  # in ``_move_all``'s flat list, rank r's buffer b is at 3 * r + index


def _listed_order(item) -> int:
    return item[0]


def reference(plan, arrivals) -> None:
    """The analytic model's numbers: the collective's definition, reduced in rank order."""
    p = len(arrivals)
    op, kind, root = plan.ufunc, plan.collective, plan.root
    ins = [a.ins for a in arrivals]
    outs = [a.outs for a in arrivals]
    if kind == "all_reduce" and ins[0].size == 1 and one_element_all_reduce(op, ins, outs, plan.post):
        pass
    elif kind == "all_reduce" and fusable(ins, outs):
        all_reduce_blocks(op, ins, outs, plan.post)
    elif kind in ("all_reduce", "reduce", "reduce_scatter"):
        acc = ins[0].copy()
        for x in ins[1:]:
            op(acc, x, out=acc)
        if plan.post is not None:
            acc = plan.post(acc)
        if kind == "all_reduce":
            for out in outs:
                out[:] = acc
        elif kind == "reduce":
            outs[root][:] = acc
        else:
            for r, (off, count) in enumerate(chunks(acc.size, p)):
                outs[r][:] = acc[off:off + count]
    elif kind == "broadcast":
        data = ins[root].copy()
        for out in outs:
            out[:] = data
    elif kind in ("all_gather", "gather"):
        data = np.concatenate(ins)
        for r, out in enumerate(outs):
            if kind == "all_gather" or r == root:
                out[:] = data
    elif kind == "scatter":
        data = ins[root]
        for r, (off, count) in enumerate(chunks(data.size, p)):
            outs[r][:] = data[off:off + count]
    elif kind == "all_to_all":
        splits = [a.fingerprint.get("splits_in") or [x.size // p] * p for a, x in zip(arrivals, ins)]
        sends = [np.split(x, np.cumsum(s)[:-1]) for x, s in zip(ins, splits)]
        for j in range(p):
            outs[j][:] = np.concatenate([sends[i][j] for i in range(p)])
    else:
        raise AssertionError(kind)


class Compiled:
    """A schedule prepared for ``TimedRun`` (built once per schedule, then reused).

    ``table(k)`` is ``(items, eager)`` of step k, made on its first use (ADR-0027: a schedule
    of 2M transfers costs nothing here until a run reaches its steps). ``items[r]``: indices
    into step k's transfers that rank r takes part in, in listed order. ``eager[r]``: rank r
    may apply its step-k receives on arrival, reading the sender's buffer directly (no
    snapshot copy): its receives write pairwise disjoint slices that none of its step-k sends
    reads, and it has no local copy in the step. Then neither the order of applications nor
    any send of the step can observe the difference, and the sender cannot change the slice
    before the payload is applied (it writes its own buffers only by its own receives, which
    are disjoint from its sends, or at the end of its step, after this transfer was delivered).
    """

    def __init__(self, schedule):
        self.schedule = schedule
        self._tables = [None] * len(schedule.steps)
        self._profiles: dict = {}  # a plan's shape -> its closedform.Profile
        self._moves = None
        self._blocked: dict = {}  # itemsize -> the runs of ``moves``

    def profile(self, run) -> Profile:
        """The ``closedform.Profile`` of ``run``'s plan, built once per plan shape."""
        plan = run.plan
        key = (tuple(plan.devices), plan.rails is not None, plan.itemsize, plan.protocol,
               plan.gamma_ns_per_byte)
        profile = self._profiles.get(key)
        if profile is None:
            profile = self._profiles[key] = Profile(run)
        return profile

    def moves(self, itemsize: int) -> list:
        """The schedule's transfers that carry elements, in step and listed order, as runs
        ``(direct, items, blocked)``. ``direct``: in each of the run's steps no slice the step
        writes overlaps one it reads, so its payloads need no snapshot copies; its items are
        then ``(src, dst, src lo, src hi, dst lo, dst hi, reduce)`` with ``src``/``dst`` a
        buffer's flat index (``_BUFFERS``), and ``blocked`` the same moves in cache-sized blocks
        (``block_moves``) or None; else the step's ``Xfer`` objects and None."""
        if self._moves is None:
            self._moves = []
            for step in self.schedule.steps:
                moving = step.carrying()
                writes = [(x.dst, x.dst_buf, x.dst_off, x.dst_off + x.count) for x in moving]
                reads = {}
                for x in moving:
                    reads.setdefault((x.src, x.src_buf), []).append((x.src_off, x.src_off + x.count))
                direct = not any(lo < hi_r and lo_r < hi for r, buf, lo, hi in writes
                                 for lo_r, hi_r in reads.get((r, buf), ()))
                if not direct:
                    self._moves.append((False, moving))
                    continue
                if not self._moves or not self._moves[-1][0]:
                    self._moves.append((True, []))
                self._moves[-1][1].extend(
                    (3 * x.src + _BUFFERS.index(x.src_buf), 3 * x.dst + _BUFFERS.index(x.dst_buf),
                     x.src_off, x.src_off + x.count, x.dst_off, x.dst_off + x.count, x.reduce)
                    for x in moving)
        runs = self._blocked.get(itemsize)
        if runs is None:
            block = max(1, BLOCK_BYTES // itemsize)
            runs = self._blocked[itemsize] = [
                (direct, items, block_moves(items, block) if direct else None)
                for direct, items in self._moves]
        return runs

    def table(self, k: int) -> tuple:
        table = self._tables[k]
        if table is None:
            p, xfers = self.schedule.p, self.schedule.steps[k].xfers
            per_rank = [[] for _ in range(p)]
            for i, x in enumerate(xfers):
                per_rank[x.src].append(i)
                if x.dst != x.src:
                    per_rank[x.dst].append(i)
            eager = [_eager(r, [xfers[i] for i in per_rank[r]]) for r in range(p)]
            table = self._tables[k] = (per_rank, eager)
        return table


def _eager(r: int, xfers) -> bool:
    writes, reads = [], []
    for x in xfers:
        if x.src == x.dst:
            return False
        if x.dst == r:
            writes.append((x.dst_buf, x.dst_off, x.dst_off + x.count))
        else:
            reads.append((x.src_buf, x.src_off, x.src_off + x.count))
    for i, (buf, lo, hi) in enumerate(writes):
        for other in writes[i + 1:] + reads:
            if other[0] == buf and other[1] < hi and lo < other[2]:
                return False
    return True


class TimedRun:
    """A schedule executed on the network (ADR-0008 semantics, ADR-0004 link contention).

    Per rank: its current step; the items (transfers sent or received, local copies) of that
    step still outstanding; the payloads received for it. A transfer of step k starts when
    both ends have started step k, after the protocol's base latency (ADR-0023), with its step
    latency added to the route's and ``protocol.wire_bytes`` on the links; a reduction costs
    ``gamma`` per byte, pipelined in the protocol's slices (``pipelined_reduce_ns``); a rank
    applies its step's receives in listed order when the step's items are all done (or on
    arrival, where ``Compiled.table`` shows that is the same), then starts the next step.
    """

    def __init__(self, collective, arrivals, plan, compiled: Compiled):
        self.collective = collective
        self.arrivals = arrivals
        self.plan = plan
        self.rt = collective.state.rt  # the runtime port
        self.engine, self.network = self.rt.engine, self.rt.network  # a Replay's while settling
        schedule = plan.schedule
        p = schedule.p
        self.step = [-1] * p
        self.outstanding = [0] * p
        self.received: list[list] = [[] for _ in range(p)]
        self.compiled = compiled
        self.ends_started = [dict() for _ in schedule.steps]
        tmp = schedule.tmp_count
        self.hollow = arrivals[0].hollow  # timing-only buffers: transfers, no data (ADR-0020)
        self.moves = not self.hollow  # False also once a closed-form run has moved the data
        self.finished = [False] * p
        self.closed = None  # while the run has the links to itself: (start ns, streams, handles)
        self.bufs = None if self.hollow else [{"in": a.ins, "out": a.outs,
                      "tmp": np.zeros(tmp, dtype=(a.ins if a.ins is not None else a.outs).dtype)}
                     for a in arrivals]

    def start(self) -> None:
        base_ns = self.plan.protocol.base_latency_ns
        if base_ns:
            timer = self.engine.timer(base_ns, ("{} protocol latency", self.collective.name))
            timer.add_callback(lambda _t: self._start_all())
        else:
            self._start_all()

    def _start_all(self) -> None:
        p = self.plan.schedule.p
        if self.network.claimable() and self.engine.reorder is None:
            found = timeline(self.compiled.profile(self), p, self.engine.now_ns)
            if found is not None:
                self._claim(*found)
                return
        for r in range(p):
            self._start_step(r, 0)

    # -- closed form (ADR-0031): the run's times computed at its start, one event per end time

    def _claim(self, ends, streams) -> None:
        self.network.claim(self)
        at: dict = {}
        for r, t in enumerate(ends):
            at.setdefault(t, []).append(r)
        handles = []
        times = sorted(at)
        for i, t in enumerate(times):
            handle = Handle(("{} (closed form): ranks done", self.collective.name))
            handle.add_callback(lambda _h, ranks=at[t], last=i == len(times) - 1: self._closed_done(ranks, last))
            handles.append(self.engine.schedule(handle, t))
        self.closed = (self.engine.now_ns, streams, handles)

    def _closed_done(self, ranks, last: bool) -> None:
        if self.moves:
            self._move_all()
            self.moves = False
        for r in ranks:
            self._rank_done(r)
        if last:
            network = self.network
            network.release(self)
            network.record(self.compiled.profile(self).routes, self.closed[1])
            self.closed = None

    def _move_all(self) -> None:
        """Every step's payloads applied, by the schedule's semantics (``run_schedule``); a
        direct run block by block where the buffers do not overlap (``block_moves``)."""
        op = self.plan.ufunc
        arrays = [b[name] for b in self.bufs for name in _BUFFERS]
        for direct, moving, blocked in self.compiled.moves(self.plan.itemsize):
            if not direct:
                for x, payload in [(x, self._payload(x)) for x in moving]:
                    self._apply(x, payload)
                continue
            if blocked is not None and apart([a.ins for a in self.arrivals], [a.outs for a in self.arrivals]):
                moving = blocked
            for src, dst, src_lo, src_hi, dst_lo, dst_hi, reduce in moving:  # _apply, inlined
                target = arrays[dst][dst_lo:dst_hi]
                if reduce:
                    op(target, arrays[src][src_lo:src_hi], out=target)
                else:
                    target[...] = arrays[src][src_lo:src_hi]

    def settle(self) -> None:
        """Something else needs the links now: replay the run from its start with the event
        model on a private engine and network up to now, then move its transfers in flight
        and pending timers onto the real ones (``Network.settle`` calls this)."""
        start_ns, _, handles = self.closed
        self.closed = None
        for handle in handles:
            handle.cancel()  # the ranks not yet done complete by the event model instead
        engine, network = self.engine, self.network
        now = engine.now_ns
        replay = Replay(start_ns)
        self.engine, self.network = replay, network.replica(replay)
        for r in range(self.plan.schedule.p):
            self._start_step(r, 0)
        while replay.peek_ns() is not None and replay.peek_ns() < now:
            replay.step_instant()
        replica, self.engine, self.network = self.network, engine, network
        network.adopt(replica)
        for at_ns, handle in replay.pending():
            callbacks = handle.callbacks
            if not (callbacks and getattr(callbacks[0], "__self__", None) is replica):
                engine.schedule(handle, at_ns)

    def _start_step(self, r: int, k: int) -> None:
        steps = self.plan.schedule.steps
        while k < len(steps) and not self.compiled.table(k)[0][r]:
            k += 1  # a step without this rank
        self.step[r] = k
        if k == len(steps):
            self._rank_done(r)
            return
        xfers = steps[k].xfers
        items = self.compiled.table(k)[0][r]
        self.outstanding[r] = len(items)
        started = self.ends_started[k]
        for i in items:
            x = xfers[i]
            if x.src == x.dst:
                self._local(r, i, x)
                continue
            started[i] = started.get(i, 0) + 1
            if started[i] == 2:
                self._send(k, i, x)

    def _payload(self, x):
        if not self.moves:
            return None
        return self.bufs[x.src][x.src_buf][x.src_off:x.src_off + x.count].copy()

    def _local(self, r, i, x) -> None:
        payload = self._payload(x)
        nbytes = x.count * self.plan.itemsize
        delay = nbytes * self.plan.gamma_ns_per_byte if x.reduce else 0.0
        self.received[r].append((i, x, payload))
        timer = self.engine.timer(delay, ("local {} in {}", "reduce" if x.reduce else "copy", self.collective.name))
        timer.add_callback(lambda _t: self._item_done(r))

    def stripes(self, src: int, dst: int) -> tuple:
        """``(rail_routes of the pair, the smallest of their latencies in ns)``, cached in
        ``plan.routes`` (the planner's, shared by the collectives of a spawn)."""
        plan = self.plan
        a, b, rails = plan.devices[src], plan.devices[dst], plan.rails
        key = (a, b, rails is not None)
        stripes = plan.routes.get(key)
        if stripes is None:
            routes = rail_routes(self.rt.topology, a, b, rails)
            stripes = plan.routes[key] = (
                routes, min(sum(link.latency_ns for link in route) for route in routes))
        return stripes

    def _send(self, k, i, x) -> None:
        eager = self.compiled.table(k)[1][x.dst]
        payload = None if eager else self._payload(x)
        plan = self.plan
        protocol = plan.protocol
        nbytes = x.count * plan.itemsize
        stripes, latency_ns = self.stripes(x.src, x.dst)
        desc = ("{} step {}: rank {} -> rank {}", self.collective.name, k, x.src, x.dst)
        first_byte_ns = self.engine.now_ns + protocol.step_latency_ns + latency_ns
        count = len(stripes)
        left = [count]

        def arrived(_h):
            if count > 1:
                left[0] -= 1
                if left[0]:
                    return  # other stripes still on their way
            if eager and self.moves:
                self._apply(x, self.bufs[x.src][x.src_buf][x.src_off:x.src_off + x.count])
            else:
                self.received[x.dst].append((i, x, payload))
            self._item_done(x.src)
            if x.reduce and plan.gamma_ns_per_byte:
                stream_ns = self.engine.now_ns - first_byte_ns
                delay = pipelined_reduce_ns(nbytes, plan.gamma_ns_per_byte, protocol.slice_bytes, stream_ns)
                timer = self.engine.timer(delay, ("reduce in {}", self.collective.name))
                timer.add_callback(lambda _t: self._item_done(x.dst))
            else:
                self._item_done(x.dst)

        wire = nbytes if protocol.bandwidth_efficiency == 1.0 else protocol.wire_bytes(nbytes)
        parts = chunks(wire, count) if count > 1 else ((0, wire),)
        for route, (_, part) in zip(stripes, parts):
            handle = self.network.transfer(route, part, desc, on_done=arrived,
                                           extra_latency_ns=protocol.step_latency_ns)
            if self.network.trace is not None:
                self.network.trace.label(handle, self.collective, k, x.src, x.dst)

    def _item_done(self, r: int) -> None:
        self.outstanding[r] -= 1
        if self.outstanding[r]:
            return
        k = self.step[r]
        if self.received[r]:
            received = sorted(self.received[r], key=_listed_order)  # applications in listed order
            self.received[r] = []
            for _, x, payload in received:
                self._apply(x, payload)
        self._start_step(r, k + 1)

    def _apply(self, x, payload) -> None:
        if payload is None:  # nothing moves: timing-only buffers, or the data already moved
            return
        target = self.bufs[x.dst][x.dst_buf][x.dst_off:x.dst_off + x.count]
        if x.reduce:
            self.plan.ufunc(target, payload, out=target)
        else:
            target[:] = payload

    def _rank_done(self, r: int) -> None:
        if self.finished[r]:
            return  # completed by the closed form before a settle replayed the run
        self.finished[r] = True
        arrival = self.arrivals[r]
        if self.plan.post is not None and arrival.outs is not None and not self.hollow and self._holds_result(r):
            arrival.outs[:] = self.plan.post(arrival.outs)
        self.collective.member_done(arrival)

    def _holds_result(self, r: int) -> bool:
        kind = self.plan.collective
        return kind in ("all_reduce", "reduce_scatter") or (kind == "reduce" and r == self.plan.root)


def rail_routes(topology, a: int, b: int, rails) -> list:
    """The routes a transfer from device ``a`` to ``b`` is spread over: its one route, or
    between nodes with ``rails`` (node -> its devices) one per rail k: to the source node's
    k-th device over its node's links, across on that device's network card to the k-th
    device of the destination node, then to ``b`` (NCCL's channels over every NIC, relayed
    over NVLink as its PXN does)."""
    node_a, node_b = topology.devices[a].node, topology.devices[b].node
    if rails is None or node_a == node_b:
        return [topology.route(a, b)]
    routes = []
    for k, relay_a in enumerate(rails[node_a]):
        relay_b = rails[node_b][k % len(rails[node_b])]
        routes.append(topology.route(a, relay_a) + topology.route(relay_a, relay_b)
                      + topology.route(relay_b, b))
    return routes


def run_analytic(collective, arrivals, plan) -> None:
    """Complete every member at the closed-form time from now, with the reference numbers."""
    engine = collective.state.rt.engine
    ns = plan.analytic_ns  # model_time_ns of the plan, computed once per plan (planning)
    finished = Handle(("{} (analytic)", collective.name))
    hollow = arrivals[0].hollow
    finished.add_callback(lambda _h: (hollow or reference(plan, arrivals), collective.complete_all(arrivals)))
    engine.schedule(finished, engine.now_ns + ns)


def run_timed(collective, arrivals, plan, planner) -> None:
    """Start the transfer model: the schedule on the links, or nvls on the switch's."""
    if plan.switch is not None:
        NvlsRun(collective, arrivals, plan, reference).start()
    else:
        TimedRun(collective, arrivals, plan, planner.compiled(plan.schedule)).start()
