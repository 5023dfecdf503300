"""Rendezvous of one collective: arrivals, fingerprints, start and completion.

Life of a collective (one per group and sequence number):

1. **Arrivals.** Each member's call records an ``Arrival`` (its fingerprint, its buffers, the
   Handle that completes with its part) and enqueues one op on its device stream.
2. **Check.** When every member has arrived, the fingerprints (op, seq, shapes, dtypes,
   reduce op, root, split sizes) are compared; any difference raises
   ``CollectiveMismatchError`` in every member (C6: each is a root cause).
3. **Start.** Each member's stream op calls ``start`` when the stream reaches it; when all
   are ready, it is planned (``planning``) and run (``execution``): by the ``transfer`` model
   (its algorithm's schedule on the topology's links, ``TimedRun``) or the ``analytic``
   model (closed form; numbers from the reference reduction).
4. **Completion.** Each member's Handle completes when its part is done; outputs are written
   into the tensors' memory at that virtual time (C8: host reads wait for it).

A collective that has not completed ``timeout`` of virtual time after its first arrival, while
the simulation advances, fails its waiting members with ``DistTimeoutError``.
"""

from __future__ import annotations

from coopsim.distributed.execution import run_analytic, run_timed
from coopsim.engine import Handle
from coopsim.errors import CollectiveMismatchError, DistTimeoutError, format_ranks
from coopsim.runtime.frames import describe_site

FINGERPRINT_FIELDS = ("op", "seq", "shapes", "dtypes", "reduce_op", "root", "splits")
_IN_KEY = {name: i for i, name in enumerate(FINGERPRINT_FIELDS[:-1])}  # field -> index in ``key``


class Fingerprint:
    """What one member's call says about the collective.

    ``key`` = (op, seq, shapes, dtypes, reduce_op, root): the fields the members must agree
    on, built once per call and compared as one tuple (shapes and dtypes as tuples of the
    tensors' shape tuples and dtypes). ``splits`` (all_to_all_single's, compared apart) is set
    only when they disagree. Fields read by name as from a dict, ``fp["count"]``; shapes and
    dtypes then read as the report shows them (a list of tuples, a list of dtype names).
    """

    __slots__ = ("key", "count", "dtype_obj", "device", "root_member", "splits_in", "splits_out",
                 "splits")

    __init__ = object.__init__  # made by ``new_fingerprint``: no ``__init__`` frame per call (ADR-0037)

    def __getitem__(self, name):
        i = _IN_KEY.get(name)
        if i is None:
            return getattr(self, name)
        value = self.key[i]
        if value is not None and name in ("shapes", "dtypes"):
            return [v if name == "shapes" else str(v) for v in value]
        return value

    def get(self, name, default=None):
        try:
            return self[name]
        except AttributeError:
            return default


class CollectiveOp(Handle):
    """A member's part of a collective, which is also the op on the member's device stream
    (``Stream.enqueue_work``'s ``op``): it completes when that member's part is done, and the
    stream's next op, the host reads of its outputs (C8) and its waiters follow from it. One
    handle and one completion per member and call (ADR-0033).

    ``desc`` names it as the stream op ("all_reduce #3 on group WORLD on dev1", what a
    waiting rank's report shows), ``member_desc`` as the member's part ("... (rank 1)");
    both are made from the collective when read: no string per member outlives the run."""

    __slots__ = ("collective", "member", "device")

    __init__ = object.__init__  # made by ``_new_op``: no ``__init__`` frame per call (ADR-0037)

    @property
    def desc(self) -> str:
        return f"{self.collective.name} on dev{self.device}"

    @property
    def member_desc(self) -> str:
        c = self.collective
        return f"{c.name} (rank {c.group.ranks[self.member]})"

    def start(self) -> "CollectiveOp":
        """The member's stream reached the collective (``Stream.enqueue_work``'s start): the
        collective starts when every member's has, and its checks passed (armed)."""
        c = self.collective
        c.ready.add(self.member)
        if c.status == "armed":
            if len(c.ready) == c.group.size:
                c.start()
        elif c.status == "mismatched":  # nothing runs: the op ends where the stream reached it
            c.state.rt.engine.schedule(self, c.state.rt.engine.now_ns)
        return self

    def started(self) -> bool:
        """Has the member's stream reached the collective?"""
        return self.member in self.collective.ready


class Arrival:
    """One member's call: ``ins``/``outs`` are its flat buffers (numpy views), ``prepare``
    (optional) fills ``ins`` when the collective starts, ``finish`` (optional) runs when the
    member's part completes (e.g. copies a staging buffer into a tensor list). ``hollow``:
    the buffers are timing-only (ADR-0020): the collective takes its time and moves no data.
    ``site`` is the user's ``(code, offset)`` of the call (``runtime.frames.user_site``);
    ``where`` formats it for reports."""

    __slots__ = ("task", "member", "fingerprint", "ins", "outs", "done", "prepare", "finish",
                 "numel", "hollow", "site")

    __init__ = object.__init__  # made by ``new_arrival``: no ``__init__`` frame per call (ADR-0037)

    @property
    def where(self) -> str | None:
        """The user's ``file:line in function`` of the call."""
        return describe_site(self.site)


# The makers of the objects made per call. Module functions, not static methods: CPython 3.11
# specializes a global's load, not an attribute's on a class; and the classes take object's C
# ``__init__``, so no nested eval frame per object (ADR-0037).

def new_fingerprint(key, count, dtype_obj, device, root_member, splits_in=None,
                    splits_out=None) -> Fingerprint:
    fp = Fingerprint()
    fp.key, fp.count, fp.dtype_obj, fp.device = key, count, dtype_obj, device
    fp.root_member, fp.splits_in, fp.splits_out, fp.splits = root_member, splits_in, splits_out, None
    return fp


def _new_op(collective, member, device) -> CollectiveOp:
    op = CollectiveOp()
    op.done = False  # Handle.__init__, inlined: one per member and collective
    op.time_ns = op._desc = op.callbacks = op.waiters = None
    op.collective, op.member = collective, member
    op.device = device  # the index of the device whose stream runs it
    return op


def new_arrival(task, member, fingerprint, ins, outs, prepare=None, finish=None, numel=0,
                hollow=False, site=None) -> Arrival:
    a = Arrival()
    a.task, a.member, a.fingerprint, a.ins, a.outs = task, member, fingerprint, ins, outs
    a.done, a.prepare, a.finish, a.numel, a.hollow, a.site = None, prepare, finish, numel, hollow, site
    return a


class Collective:
    """The rendezvous of one collective of ``group`` at sequence number ``seq``."""

    def __init__(self, state, group, seq: int, kind: str):
        self.state = state  # the spawn's DistState: its runtime port, planner and ccl
        self.group = group
        self.seq = seq
        self.kind = kind  # the op of the first arrival (fingerprints say if others differ)
        self.arrivals: dict[int, Arrival] = {}
        self.ready: set[int] = set()
        self.status = "gathering"  # -> armed -> running -> done; or failed (timeout) | mismatched
        self.error: BaseException | None = None
        self.completed = 0  # members whose part is done
        self.alarm = None  # the timeout's Handle, armed at the first arrival
        self.plan = None  # the Plan, once started (read by traces)
        self.name = f"{kind} #{seq} on group {group.name}"  # once: every arrival's desc names it

    def failure(self) -> BaseException | None:
        """The error that failed the collective, if any (``Work.exception``)."""
        return self.error

    def missing(self) -> list[int]:
        """Global ranks of the members that have not arrived (none, once done)."""
        if self.status == "done":
            return []
        return [r for i, r in enumerate(self.group.ranks) if i not in self.arrivals]

    def arrive(self, arrival: Arrival) -> CollectiveOp:
        member = arrival.member
        arrival.done = _new_op(self, member, arrival.fingerprint.device)
        self.arrivals[member] = arrival
        if len(self.arrivals) == 1 and self.group.timeout_ns is not None:
            self.alarm = Handle(("timeout of {}", self.name))
            self.alarm.add_callback(self._timed_out)
            engine = self.state.rt.engine
            engine.alarm(self.alarm, engine.now_ns + self.group.timeout_ns)
        if len(self.arrivals) == self.group.size:
            self._check(arrival.task)
        return arrival.done

    def _check(self, caller) -> None:
        fingerprints = [self.arrivals[m].fingerprint for m in range(self.group.size)]
        keys = [fp.key for fp in fingerprints]
        differ = [] if keys.count(keys[0]) == len(keys) else [
            f for f in FINGERPRINT_FIELDS if any(fp[f] != fingerprints[0][f] for fp in fingerprints)]
        if not differ and fingerprints[0].splits_in is not None and any(
                fingerprints[i].splits_in[j] != fingerprints[j].splits_out[i]
                for i in range(self.group.size) for j in range(self.group.size)):
            differ = ["splits"]  # rank i's input split j must be rank j's output split i
            for fp in fingerprints:
                fp.splits = (fp.splits_in, fp.splits_out)
        if not differ:
            self.status = "armed"
            if len(self.ready) == self.group.size:
                self.start()
            return
        error = CollectiveMismatchError(self._mismatch_table(fingerprints, differ), self, differ)
        self._drop_ops()
        self._fail(error, caller)

    def _drop_ops(self) -> None:
        """A mismatch runs nothing on any member, as PyTorch's ProcessGroupWrapper checks the
        fingerprints before it issues the backend op (ProcessGroupWrapper.cpp,
        ``runCollectiveChecks``): each member's stream op ends, moving no data, when its
        stream reaches it (now, if it has), so that a program that catches the error can use
        the group again; the collective leaves the group's open ones."""
        self.status = "mismatched"
        if self.alarm is not None:
            self.alarm.cancel()
        engine = self.state.rt.engine
        for m in sorted(self.arrivals):
            if m in self.ready:
                engine.schedule(self.arrivals[m].done, engine.now_ns)
        self.group.forget(self.seq)

    def _mismatch_table(self, fingerprints, differ) -> str:
        """One table for the collective: the members grouped by identical fingerprint and
        call site, each group once, its ranks as ranges (the size does not grow with N)."""
        groups: dict = {}
        for m, fp in enumerate(fingerprints):
            shown = ", ".join(f"{k}={fp[k]}" for k in FINGERPRINT_FIELDS if fp[k] is not None)
            key = (shown, self.arrivals[m].where or "an unknown place")
            groups.setdefault(key, []).append(self.group.ranks[m])
        lines = [f"{self.kind} #{self.seq} on group {self.group.name}: the ranks' calls do not "
                 f"match (different {', '.join(differ)})"]
        for (shown, where), ranks in groups.items():  # in order of their lowest member
            lines.append(f"  ranks {format_ranks(ranks)}: {shown}\n    called at {where}")
        lines.append(f"fields that differ: {', '.join(differ)}")
        return "\n".join(lines)

    def _fail(self, error, caller=None) -> None:
        """Raise ``error`` in every live member, each as its own failure (root causes)."""
        if self.status != "mismatched":
            self.status = "failed"
        self.error = error
        rt = self.state.rt
        for m in sorted(self.arrivals):
            task = self.arrivals[m].task
            if task is not caller and not task.greenlet.dead:
                rt.interrupt(task, _copy_error(error))
        if caller is not None:
            raise error

    def _timed_out(self, _alarm) -> None:
        if self.status in ("done", "failed", "mismatched"):
            return
        timeout_ms = self.group.timeout_ns / 1e6
        first = self.arrivals[min(self.arrivals)]
        error = DistTimeoutError(
            f"Watchdog caught collective operation timeout: WorkCoopsim(SeqNum={self.seq}, "
            f"OpType={self.kind.upper()}, NumelIn={first.numel}, NumelOut={first.numel}, "
            f"Timeout(ms)={timeout_ms:g}) ran for {timeout_ms:g} milliseconds before timing out. "
            f"Missing ranks: {format_ranks(self.missing()) if self.missing() else 'none (their streams never reached it)'}",
            self)
        self._fail(error)

    # -- execution ------------------------------------------------------------------------

    def start(self) -> None:
        """Every member is ready and the checks passed: plan and run it."""
        self.status = "running"
        arrivals = [self.arrivals[m] for m in range(self.group.size)]
        for a in arrivals:
            if a.prepare is not None:
                a.prepare()
        planner = self.state.planner
        plan = self.plan = planner.plan(arrivals)
        if plan is None:  # nothing to move (p == 1 or no data): done now
            self.complete_all(arrivals)
        elif planner.ccl.model == "analytic":
            run_analytic(self, arrivals, plan)
        else:
            run_timed(self, arrivals, plan, planner)

    def complete_all(self, arrivals) -> None:
        """Every member's part is done now (one loop for the group: the analytic model)."""
        schedule, now = self.state.rt.engine.schedule, self.state.rt.engine.now_ns
        for a in arrivals:
            if a.finish is not None:
                a.finish()
            schedule(a.done, now)
        self.completed += len(arrivals)
        if self.completed == self.group.size:
            self._release()

    def member_done(self, arrival: Arrival) -> None:
        if arrival.finish is not None:
            arrival.finish()
        engine = self.state.rt.engine
        engine.schedule(arrival.done, engine.now_ns)
        self.completed += 1
        if self.completed == self.group.size:
            self._release()

    def _release(self) -> None:
        """All done: let go of the arrivals (their buffers, fingerprints, and their places in
        the members' pending queues: nothing per member outlives the collective but its
        ``CollectiveOp``, which the flight recorder keeps); disarm the timeout."""
        self.status = "done"
        if self.alarm is not None:
            self.alarm.cancel()
        settle = self.state.settle
        for a in self.arrivals.values():
            a.ins = a.outs = a.prepare = a.finish = None
            settle(a)
        self.arrivals = {}
        self.group.forget(self.seq)


def _copy_error(error):
    clone = type(error).__new__(type(error))
    clone.__dict__.update(error.__dict__)
    clone.args = error.args
    return clone


