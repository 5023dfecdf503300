"""Rendezvous and execution of one collective: arrivals, fingerprints, the timed run.

Life of a collective (one per group and sequence number):

1. **Arrivals.** Each member's call records an ``Arrival`` (its fingerprint, its buffers, the
   Handle that completes with its part) and enqueues one op on its device stream.
2. **Check.** When every member has arrived, the fingerprints (op, seq, shapes, dtypes,
   reduce op, root, split sizes) are compared; any difference raises
   ``CollectiveMismatchError`` in every member (C6: each is a root cause).
3. **Start.** Each member's stream op calls ``ready`` when the stream reaches it; when all
   are ready, the collective runs: by the ``transfer`` model (its algorithm's schedule on the
   topology's links, ``TimedRun``) or the ``analytic`` model (closed form; numbers from the
   reference reduction).
4. **Completion.** Each member's Handle completes when its part is done; outputs are written
   into the tensors' memory at that virtual time (C8: host reads wait for it).

A collective that has not completed ``timeout`` of virtual time after its first arrival, while
the simulation advances, fails its waiting members with ``DistTimeoutError``.
"""

from __future__ import annotations

import numpy as np

from coopsim.distributed.algorithms import analytic_time_ns, build_schedule, chunks
from coopsim.engine import Handle
from coopsim.errors import CollectiveMismatchError, DistTimeoutError

FINGERPRINT_FIELDS = ("op", "seq", "shapes", "dtypes", "reduce_op", "root", "splits")


class CollectiveOp(Handle):
    """A member's part of a collective: completes when that member's part is done."""

    __slots__ = ("collective", "member")

    def __init__(self, desc, collective, member):
        super().__init__(desc)
        self.collective = collective
        self.member = member


class Arrival:
    """One member's call: ``ins``/``outs`` are its flat buffers (numpy views), ``prepare``
    (optional) fills ``ins`` when the collective starts, ``finish`` (optional) runs when the
    member's part completes (e.g. copies a staging buffer into a tensor list)."""

    __slots__ = ("task", "member", "fingerprint", "ins", "outs", "done", "prepare", "finish",
                 "numel")

    def __init__(self, task, member, fingerprint, ins, outs, prepare=None, finish=None, numel=0):
        self.task = task
        self.member = member
        self.fingerprint = fingerprint
        self.ins = ins
        self.outs = outs
        self.done = None
        self.prepare = prepare
        self.finish = finish
        self.numel = numel


class Collective:
    """The rendezvous of one collective of ``group`` at sequence number ``seq``."""

    def __init__(self, dist, group, seq: int, kind: str):
        self.dist = dist
        self.group = group
        self.seq = seq
        self.kind = kind  # the op of the first arrival (fingerprints say if others differ)
        self.arrivals: dict[int, Arrival] = {}
        self.ready: set[int] = set()
        self.state = "gathering"  # -> armed -> running -> done | failed
        self.error: BaseException | None = None
        self.completed = 0  # members whose part is done
        self.alarm = None  # the timeout's Handle, armed at the first arrival
        self.plan = None  # the Plan, once started (read by traces)

    @property
    def name(self) -> str:
        return f"{self.kind} #{self.seq} on group {self.group.name}"

    def missing(self) -> list[int]:
        """Global ranks of the members that have not arrived."""
        return [r for i, r in enumerate(self.group.ranks) if i not in self.arrivals]

    def arrive(self, arrival: Arrival) -> CollectiveOp:
        member = arrival.member
        rank = self.group.ranks[member]
        arrival.done = CollectiveOp(("{} (rank {})", self.name, rank), self, member)
        self.arrivals[member] = arrival
        if len(self.arrivals) == 1 and self.group.timeout_ns is not None:
            self.alarm = Handle(("timeout of {}", self.name))
            self.alarm.add_callback(self._timed_out)
            self.dist.ctx.engine.alarm(self.alarm, self.dist.ctx.engine.now_ns + self.group.timeout_ns)
        if len(self.arrivals) == self.group.size:
            self._check(arrival.task)
        return arrival.done

    def _check(self, caller) -> None:
        fingerprints = [self.arrivals[m].fingerprint for m in range(self.group.size)]
        differ = [f for f in FINGERPRINT_FIELDS if any(fp[f] != fingerprints[0][f] for fp in fingerprints)]
        if not differ and fingerprints[0].get("splits_in") is not None and any(
                fingerprints[i]["splits_in"][j] != fingerprints[j]["splits_out"][i]
                for i in range(self.group.size) for j in range(self.group.size)):
            differ = ["splits"]  # rank i's input split j must be rank j's output split i
            for fp in fingerprints:
                fp["splits"] = (fp["splits_in"], fp["splits_out"])
        if not differ:
            self.state = "armed"
            if len(self.ready) == self.group.size:
                self._start()
            return
        lines = [f"{self.kind} #{self.seq} on group {self.group.name}: the ranks' calls do not "
                 f"match (different {', '.join(differ)})"]
        for m, fp in enumerate(fingerprints):
            shown = ", ".join(f"{k}={fp[k]}" for k in FINGERPRINT_FIELDS if fp[k] is not None)
            lines.append(f"  rank {self.group.ranks[m]}: {shown}")
        lines.append(f"fields that differ: {', '.join(differ)}")
        self._fail(CollectiveMismatchError("\n".join(lines), self, differ), caller)

    def _fail(self, error, caller=None) -> None:
        """Raise ``error`` in every live member, each as its own failure (root causes)."""
        self.state, self.error = "failed", error
        scheduler = self.dist.ctx._scheduler
        for m in sorted(self.arrivals):
            task = self.arrivals[m].task
            if task is not caller and not task.greenlet.dead:
                scheduler.interrupt(task, _copy_error(error))
        if caller is not None:
            raise error

    def _timed_out(self, _alarm) -> None:
        if self.state in ("done", "failed"):
            return
        timeout_ms = self.group.timeout_ns / 1e6
        first = self.arrivals[min(self.arrivals)]
        error = DistTimeoutError(
            f"Watchdog caught collective operation timeout: WorkCoopsim(SeqNum={self.seq}, "
            f"OpType={self.kind.upper()}, NumelIn={first.numel}, NumelOut={first.numel}, "
            f"Timeout(ms)={timeout_ms:g}) ran for {timeout_ms:g} milliseconds before timing out. "
            f"Missing ranks: {self.missing() or 'none (their streams never reached it)'}",
            self)
        self._fail(error)

    def member_ready(self, member: int) -> Handle:
        """Called when ``member``'s stream reaches the collective; returns its part's Handle."""
        done = self.arrivals[member].done
        self.ready.add(member)
        if self.state == "armed" and len(self.ready) == self.group.size:
            self._start()
        return done

    # -- execution ------------------------------------------------------------------------

    def _start(self) -> None:
        self.state = "running"
        dist = self.dist
        arrivals = [self.arrivals[m] for m in range(self.group.size)]
        for a in arrivals:
            if a.prepare is not None:
                a.prepare()
        spec = self.plan = self.dist.plan(self, arrivals)
        if spec is None:  # nothing to move (p == 1 or no data): done now
            self._complete_all(arrivals)
            return
        if dist.ccl.model == "analytic":
            self._run_analytic(arrivals, spec)
        else:
            TimedRun(self, arrivals, spec, dist.compiled(spec.schedule)).start()

    def _run_analytic(self, arrivals, spec) -> None:
        engine = self.dist.ctx.engine
        ns = analytic_time_ns(spec.collective, spec.algorithm, len(arrivals), spec.nbytes,
                              spec.alpha_ns, spec.beta_ns_per_byte, spec.gamma_ns_per_byte,
                              spec.nodes)
        finished = Handle(("{} (analytic)", self.name))
        finished.add_callback(lambda _h: (reference(spec, arrivals), self._complete_all(arrivals)))
        engine.schedule(finished, engine.now_ns + ns)

    def _complete_all(self, arrivals) -> None:
        for a in arrivals:
            self.member_done(a)

    def member_done(self, arrival: Arrival) -> None:
        if arrival.finish is not None:
            arrival.finish()
        engine = self.dist.ctx.engine
        engine.schedule(arrival.done, engine.now_ns)
        self.completed += 1
        if self.completed == self.group.size:  # let go of the buffers; disarm the timeout
            self.state = "done"
            if self.alarm is not None:
                self.alarm.callbacks = None
                self.alarm.done = True  # the engine skips it when its time comes
            self.arrivals = {m: _Done(a.task) for m, a in self.arrivals.items()}
            self.group.forget(self.seq)


class _Done:
    """What stays of a completed member's arrival: enough for reports, no buffers."""

    __slots__ = ("task",)

    def __init__(self, task):
        self.task = task


def _listed_order(item) -> int:
    return item[0]


def _copy_error(error):
    clone = type(error).__new__(type(error))
    clone.__dict__.update(error.__dict__)
    clone.args = error.args
    return clone


class Plan:
    """How a collective runs: the schedule or formula inputs and the reduction."""

    __slots__ = ("collective", "algorithm", "schedule", "nbytes", "itemsize", "ufunc", "post",
                 "root", "nodes", "devices", "alpha_ns", "beta_ns_per_byte", "gamma_ns_per_byte")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))


def reference(plan: Plan, arrivals) -> None:
    """The analytic model's numbers: the collective's definition, reduced in rank order."""
    p = len(arrivals)
    op, kind, root = plan.ufunc, plan.collective, plan.root
    ins = [a.ins for a in arrivals]
    outs = [a.outs for a in arrivals]
    if kind in ("all_reduce", "reduce", "reduce_scatter"):
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

    ``items[k][r]``: indices into step k's transfers that rank r takes part in, in listed
    order. ``eager[k][r]``: rank r may apply its step-k receives on arrival, reading the
    sender's buffer directly (no snapshot copy): its receives write pairwise disjoint slices
    that none of its step-k sends reads, and it has no local copy in the step. Then neither
    the order of applications nor any send of the step can observe the difference, and the
    sender cannot change the slice before the payload is applied (it writes its own buffers
    only by its own receives, which are disjoint from its sends, or at the end of its step,
    after this transfer was delivered).
    """

    def __init__(self, schedule):
        p = schedule.p
        self.schedule = schedule
        self.items = []
        self.eager = []
        for step in schedule.steps:
            per_rank = [[] for _ in range(p)]
            for i, x in enumerate(step.xfers):
                per_rank[x.src].append(i)
                if x.dst != x.src:
                    per_rank[x.dst].append(i)
            self.items.append(per_rank)
            self.eager.append([_eager(r, [step.xfers[i] for i in per_rank[r]]) for r in range(p)])


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
    both ends have started step k; a reduction costs ``gamma`` per byte after arrival; a rank
    applies its step's receives in listed order when the step's items are all done (or on
    arrival, where ``Compiled.eager`` shows that is the same), then starts the next step.
    """

    def __init__(self, collective: Collective, arrivals, plan: Plan, compiled: Compiled):
        self.collective = collective
        self.arrivals = arrivals
        self.plan = plan
        self.ctx = collective.dist.ctx
        schedule = plan.schedule
        p = schedule.p
        self.step = [-1] * p
        self.outstanding = [0] * p
        self.received: list[list] = [[] for _ in range(p)]
        self.items = compiled.items
        self.eager = compiled.eager
        self.ends_started = [dict() for _ in schedule.steps]
        self._routes: dict = {}  # (src, dst) -> route: looked up once per pair, not per transfer
        tmp = schedule.tmp_count
        self.bufs = [{"in": a.ins, "out": a.outs,
                      "tmp": np.zeros(tmp, dtype=(a.ins if a.ins is not None else a.outs).dtype)}
                     for a in arrivals]

    def start(self) -> None:
        for r in range(self.plan.schedule.p):
            self._start_step(r, 0)

    def _start_step(self, r: int, k: int) -> None:
        steps = self.plan.schedule.steps
        while k < len(steps) and not self.items[k][r]:
            k += 1  # a step without this rank
        self.step[r] = k
        if k == len(steps):
            self._rank_done(r)
            return
        xfers = steps[k].xfers
        self.outstanding[r] = len(self.items[k][r])
        started = self.ends_started[k]
        for i in self.items[k][r]:
            x = xfers[i]
            if x.src == x.dst:
                self._local(r, i, x)
                continue
            started[i] = started.get(i, 0) + 1
            if started[i] == 2:
                self._send(k, i, x)

    def route(self, src: int, dst: int) -> tuple:
        route = self._routes.get((src, dst))
        if route is None:
            devices = self.plan.devices
            route = self._routes[src, dst] = self.ctx.topology.route(devices[src], devices[dst])
        return route

    def _payload(self, x):
        return self.bufs[x.src][x.src_buf][x.src_off:x.src_off + x.count].copy()

    def _local(self, r, i, x) -> None:
        payload = self._payload(x)
        nbytes = x.count * self.plan.itemsize
        delay = nbytes * self.plan.gamma_ns_per_byte if x.reduce else 0.0
        self.received[r].append((i, x, payload))
        timer = self.ctx.engine.timer(delay, ("local {} in {}", "reduce" if x.reduce else "copy", self.collective.name))
        timer.add_callback(lambda _t: self._item_done(r))

    def _send(self, k, i, x) -> None:
        eager = self.eager[k][x.dst]
        payload = None if eager else self._payload(x)
        plan = self.plan
        nbytes = x.count * plan.itemsize
        route = self.route(x.src, x.dst)
        desc = ("{} step {}: rank {} -> rank {}", self.collective.name, k, x.src, x.dst)

        def arrived(_h):
            if eager:
                self._apply(x, self.bufs[x.src][x.src_buf][x.src_off:x.src_off + x.count])
            else:
                self.received[x.dst].append((i, x, payload))
            self._item_done(x.src)
            if x.reduce and plan.gamma_ns_per_byte:
                timer = self.ctx.engine.timer(nbytes * plan.gamma_ns_per_byte, ("reduce in {}", self.collective.name))
                timer.add_callback(lambda _t: self._item_done(x.dst))
            else:
                self._item_done(x.dst)

        handle = self.ctx.network.transfer(route, nbytes, desc, on_done=arrived)
        if self.ctx.network.trace is not None:
            self.ctx.network.trace.label(handle, self.collective, k, x.src, x.dst)

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
        target = self.bufs[x.dst][x.dst_buf][x.dst_off:x.dst_off + x.count]
        if x.reduce:
            self.plan.ufunc(target, payload, out=target)
        else:
            target[:] = payload

    def _rank_done(self, r: int) -> None:
        arrival = self.arrivals[r]
        if self.plan.post is not None and arrival.outs is not None and self._holds_result(r):
            arrival.outs[:] = self.plan.post(arrival.outs)
        self.collective.member_done(arrival)

    def _holds_result(self, r: int) -> bool:
        kind = self.plan.collective
        return kind in ("all_reduce", "reduce_scatter") or (kind == "reduce" and r == self.plan.root)
