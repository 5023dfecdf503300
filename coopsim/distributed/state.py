"""The per-spawn state of ``torch.distributed``: process groups, initialisation, open
collectives, p2p matching, planning caches, and gloo's monitored barrier.

A ``DistState`` lives in the running spawn's slot ``"distributed"`` (``Runtime.spawn_state``),
created by the first ``init_process_group`` of the spawn, so nothing of it outlives the spawn.
"""

from __future__ import annotations

import operator
from collections.abc import MutableMapping

from coopsim.distributed.group import ProcessGroup
from coopsim.distributed.p2p import P2P
from coopsim.distributed.planning import Planner
from coopsim.engine import Handle

SLOT = "distributed"


class DistState:
    """One spawn's process groups, p2p matching and per-rank initialisation."""

    def __init__(self, rt, ccl, world_size: int, timeout_ns: float):
        self.rt = rt  # the runtime port
        self.ccl = ccl
        self.planner = Planner(rt, ccl)
        self.world = ProcessGroup(0, range(world_size), timeout_ns, "WORLD")
        self.groups = [self.world]  # index = creation order, as every rank creates them
        self.initialized = RankMap(world_size)  # rank -> backend
        # rank -> "nccl" | "gloo" (backend.cuda_backend; "nccl" until set): a plain list, read
        # on every collective call
        self.semantics: list = ["nccl"] * world_size
        self.group_semantics: dict[int, str] = {}  # group id -> its own, from new_group(backend=)
        self.new_group_calls: dict[int, int] = {}
        self.p2p = P2P(rt)
        # rank -> a list of its collective Arrivals, oldest first (``track``), None before its
        # first: a plain list, read on every call (8 bytes a rank, as a RankMap). Lists, not
        # deques: a deque is ~630 bytes even when empty (ADR-0036), and a rank's queue is short
        # (its outstanding collectives), so taking from its front costs little.
        self.pending: list = [None] * world_size
        self.user_files: dict = {}  # filename -> is it the user's (``runtime.frames.user_site``)
        self._barriers: dict = {}  # (group id, number) -> monitored barrier state
        self._barrier_calls: dict = {}  # (group id, rank) -> monitored barriers called

    def track(self, rank: int, arrival) -> None:
        """Add ``arrival`` to ``rank``'s pending collectives. Completed ones leave lazily
        (from the front, here and in ``open_collectives``): no callback per call."""
        pending = self.pending[rank]
        if pending is None:
            self.pending[rank] = [arrival]
            return
        if pending:  # the usual queue is empty: the ones before were settled at their completion
            _drop_done(pending, 0)
        pending.append(arrival)

    def settle(self, arrival) -> None:
        """``arrival``'s collective is done: it leaves its rank's pending queue if it is at the
        front (the usual order), with the completed ones behind it; one finished out of
        order leaves later, lazily."""
        pending = self.pending[arrival.task.rank]
        if pending and pending[0] is arrival:
            _drop_done(pending, 1)

    def open_collectives(self, rank: int) -> list:
        """``rank``'s incomplete collective Arrivals, oldest first."""
        pending = self.pending[rank] if 0 <= rank < len(self.pending) else None
        if not pending:
            return []
        _drop_done(pending, 0)
        return [a for a in pending if not a.done.done]

    def monitored_barrier(self, group, task, timeout_ns: float, wait_all_ranks: bool):
        """Member 0 waits for the others (at most ``timeout_ns``: a real timeout, which fires
        whatever else happens), then releases them; it raises naming the missing ranks."""
        rt = self.rt
        engine = rt.engine
        key = (group.gid, task.rank)
        number = self._barrier_calls[key] = self._barrier_calls.get(key, 0) + 1
        entry = self._barriers.setdefault((group.gid, number), {
            "arrived": set(), "all": Handle(f"monitored_barrier #{number} on group {group.name}: all arrived"),
            "release": Handle(f"monitored_barrier #{number} on group {group.name}: release by rank {group.ranks[0]}")})
        member = group.member(task.rank)
        entry["arrived"].add(member)
        if len(entry["arrived"]) == group.size:
            engine.schedule(entry["all"], engine.now_ns)
        if member != 0:
            rt.wait(entry["release"])
            return None
        gate = Handle(f"monitored_barrier #{number} on group {group.name}")
        timer = engine.timer(timeout_ns, f"monitored_barrier timeout ({timeout_ns / 1e6:g} ms)")
        for h in (timer, entry["all"]):  # any of the two opens the gate
            h.add_callback(lambda _h: gate.done or engine.schedule(gate, engine.now_ns))
        rt.wait(gate)
        if not entry["all"].done:
            missing = [group.ranks[m] for m in range(group.size) if m not in entry["arrived"]]
            ms = f"{timeout_ns / 1e6:g}"
            if wait_all_ranks:
                raise RuntimeError(f"[Rank {task.rank}]: Ranks {', '.join(map(str, missing))} failed "
                                   f"to pass monitoredBarrier in {ms} ms")
            raise RuntimeError(f"[Rank {task.rank}]: Rank {missing[0]} failed to pass "
                               f"monitoredBarrier in {ms} ms")
        engine.schedule(entry["release"], engine.now_ns)
        return None

    def backend_of(self, group, rank: int) -> str:
        """The semantics ("nccl" | "gloo") of ``rank``'s ops on ``group`` (docs/adr/0015)."""
        if self.group_semantics:
            return self.group_semantics.get(group.gid) or self.semantics[rank]
        return self.semantics[rank]


def _drop_done(pending: list, k: int) -> None:
    """Take from the front of ``pending`` its first ``k`` arrivals and the completed ones after."""
    while k < len(pending) and pending[k].done.done:
        k += 1
    if k:
        del pending[:k]


_ABSENT = object()


class RankMap(MutableMapping):
    """A dict from the ranks ``0 .. world_size-1`` held in one list: 8 bytes a rank instead of
    a dict entry (docs/adr/0030-ranks-at-scale.md). Iterates its ranks in ascending order."""

    __slots__ = ("_values",)

    def __init__(self, world_size: int):
        self._values = [_ABSENT] * world_size

    def _slot(self, rank) -> int:
        """``rank``'s list index (the same rule as list indexing in ``get``: ``__index__``)."""
        try:
            slot = operator.index(rank)
        except TypeError:
            raise KeyError(rank) from None
        if not 0 <= slot < len(self._values):
            raise KeyError(rank)
        return slot

    def __getitem__(self, rank):
        value = self._values[self._slot(rank)]
        if value is _ABSENT:
            raise KeyError(rank)
        return value

    def __setitem__(self, rank, value) -> None:
        values = self._values
        values[rank if rank.__class__ is int and 0 <= rank < len(values) else self._slot(rank)] = value

    def __delitem__(self, rank) -> None:
        self[rank]  # KeyError if absent
        self._values[self._slot(rank)] = _ABSENT

    def __contains__(self, rank) -> bool:
        try:
            return rank >= 0 and self._values[rank] is not _ABSENT
        except (IndexError, TypeError):  # beyond the world, or not a number
            return False

    def get(self, rank, default=None):
        try:
            value = self._values[rank] if rank >= 0 else _ABSENT
        except (IndexError, TypeError):
            return default
        return default if value is _ABSENT else value

    def setdefault(self, rank, default=None):
        value = self.get(rank, _ABSENT)
        if value is _ABSENT:
            self[rank] = value = default
        return value

    def __iter__(self):
        return (r for r, v in enumerate(self._values) if v is not _ABSENT)

    def __len__(self) -> int:
        return sum(v is not _ABSENT for v in self._values)
