"""Process groups: ordered sets of ranks, each numbering its collectives."""

from __future__ import annotations

from coopsim.distributed.rendezvous import Collective


class ProcessGroup:
    """An ordered set of global ranks. Member ``i`` (group rank) is global rank ``ranks[i]``.

    Each member numbers its collectives on the group (``next_seq``); the collective with a
    given number is one rendezvous, shared by the members (``collective``). Per member the
    group holds one list slot (its count), and a rank -> member map only when ``ranks`` is
    not ``0 .. size-1`` in order (WORLD is): 100,000 ranks cost no per-rank dict.
    """

    __slots__ = ("gid", "ranks", "size", "timeout_ns", "name", "_member", "_seq", "_collectives",
                 "lanes")

    def __init__(self, gid: int, ranks, timeout_ns: float | None, name: str):
        self.gid = gid
        self.ranks = tuple(ranks)
        self.size = len(self.ranks)
        self.timeout_ns = timeout_ns
        self.name = name
        contiguous = self.ranks == tuple(range(self.size))
        self._member = None if contiguous else {r: i for i, r in enumerate(self.ranks)}
        self._seq = [0] * self.size  # per member
        self._collectives: dict[int, Collective] = {}
        # per member, ``(device, backend, stream)`` of its last collective on the group:
        # the group's stream on that device (``issue.collective``), found without a name
        self.lanes: list = [None] * self.size

    def member(self, rank: int) -> int:
        """The group rank of global ``rank``, or -1 if it is not a member."""
        if self._member is None:
            if rank.__class__ is int:
                return rank if 0 <= rank < self.size else -1
            return next((i for i, r in enumerate(self.ranks) if r == rank), -1)  # as a dict's get
        return self._member.get(rank, -1)

    def next_seq(self, member: int) -> int:
        """The number of ``member``'s next collective on the group (from 1)."""
        self._seq[member] += 1
        return self._seq[member]

    def collective(self, state, seq: int, kind: str) -> Collective:
        """The rendezvous of collective number ``seq`` (``state``: the spawn's DistState)."""
        c = self._collectives.get(seq)
        if c is None:
            c = self._collectives[seq] = Collective(state, self, seq, kind)
        return c

    def forget(self, seq: int) -> None:
        self._collectives.pop(seq, None)

    def open_collectives(self) -> list[Collective]:
        return [self._collectives[s] for s in sorted(self._collectives)]

    def __repr__(self) -> str:
        return f"<ProcessGroup {self.name} ranks={list(self.ranks)}>"
