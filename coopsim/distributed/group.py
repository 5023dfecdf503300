"""Process groups: ordered sets of ranks, each numbering its collectives."""

from __future__ import annotations

from coopsim.distributed.rendezvous import Collective


class ProcessGroup:
    """An ordered set of global ranks. Member ``i`` (group rank) is global rank ``ranks[i]``.

    Each member numbers its collectives on the group (``next_seq``); the collective with a
    given number is one rendezvous, shared by the members (``collective``).
    """

    def __init__(self, gid: int, ranks, timeout_ns: float | None, name: str):
        self.gid = gid
        self.ranks = tuple(ranks)
        self.size = len(self.ranks)
        self.timeout_ns = timeout_ns
        self.name = name
        self._member = {r: i for i, r in enumerate(self.ranks)}
        self._seq = {r: 0 for r in self.ranks}
        self._collectives: dict[int, Collective] = {}

    def member(self, rank: int) -> int:
        """The group rank of global ``rank``, or -1 if it is not a member."""
        return self._member.get(rank, -1)

    def next_seq(self, rank: int) -> int:
        self._seq[rank] += 1
        return self._seq[rank]

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
