"""A topology's directed links by index: a read-only sequence whose switch links are made
when first read (docs/adr/0036-spawn-and-setup-at-scale.md).

A switch of N devices lays 2N links of one spec. Making a ``Link`` record (a frozen
dataclass) for each cost ~3 µs and two tracked objects a device while parsing, though a run
of the analytic model reads one or two of them (the alpha/beta of one pair per route class).
So the switch pattern adds its links as one ``SwitchRun``, and the table makes each record on
its first read and keeps it (a link read twice is the same object).

Invariants: ``table[i].index == i``; the records, their order and their values are exactly
what laying the links one by one made (same index, src, dst, bandwidth, latency, name,
origin); the table compares equal to a tuple of the same links; once a ``Topology`` holds it
(``seal``) it takes no more links. A run's links are valid when the run is
(``SwitchRun.check``): ``Topology`` checks a run once instead of each of its links.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from coopsim.topology import model  # model imports this module: Link is read at call time


class SwitchRun:
    """The links of a switch pattern: per device of ``devs`` the up-link ``dev -> sw``
    (``latency_ns``) then the down-link ``sw -> dev`` (``down_ns``), all of ``bandwidth_GBps``."""

    __slots__ = ("devs", "sw", "bandwidth_GBps", "latency_ns", "down_ns", "origin")

    def __init__(self, devs, sw: str, bandwidth_GBps: float, latency_ns: float, down_ns: float,
                 origin: str):
        self.devs, self.sw, self.origin = tuple(devs), sw, origin
        self.bandwidth_GBps, self.latency_ns = float(bandwidth_GBps), float(latency_ns)
        self.down_ns = float(down_ns)

    def __len__(self) -> int:
        return 2 * len(self.devs)

    def link(self, k: int, index: int) -> "model.Link":
        """The run's ``k``-th link, which is the table's link ``index``."""
        dev, sw = self.devs[k >> 1], self.sw
        if k & 1:
            return model.Link(index, sw, dev, self.bandwidth_GBps, self.down_ns, f"{sw}->{dev}", self.origin)
        return model.Link(index, dev, sw, self.bandwidth_GBps, self.latency_ns, f"{dev}->{sw}", self.origin)

    def check(self, vertex) -> bool:
        """Every link of the run joins two distinct vertices of ``vertex`` (a name -> index
        map), with bandwidth > 0 and latency >= 0 (what ``Topology`` checks per link)."""
        return (self.sw in vertex and self.sw not in self.devs and vertex.keys() >= set(self.devs)
                and self.bandwidth_GBps > 0 and self.latency_ns >= 0 and self.down_ns >= 0)


class LinkTable(Sequence):
    """Links by index: explicit ``Link`` records and runs, in the order they were added."""

    __slots__ = ("_links", "_firsts", "_runs", "_unmade", "_sealed")

    def __init__(self, links=()):
        self._links: list = list(links)  # a Link, or None until a run's link is first read
        self._firsts: list[int] = []  # per run, the index of its first link
        self._runs: list[SwitchRun] = []
        self._unmade = 0  # how many run links have no record yet
        self._sealed = False  # set by ``seal``: a topology's table takes no more links

    def seal(self) -> "LinkTable":
        self._sealed = True
        return self

    def _open(self) -> None:
        if self._sealed:
            raise TypeError("a topology's links cannot change (contexts share it)")

    def append(self, link) -> None:
        self._open()
        self._links.append(link)

    def add_run(self, run: SwitchRun) -> None:
        self._open()
        self._firsts.append(len(self._links))
        self._runs.append(run)
        self._links += [None] * len(run)
        self._unmade += len(run)

    @property
    def runs(self) -> list[tuple[int, SwitchRun]]:
        """``(first index, run)`` of every run."""
        return list(zip(self._firsts, self._runs))

    def explicit(self):
        """``(index, link)`` of the links added as records (not through a run), in order."""
        start = 0
        for first, run in [*zip(self._firsts, self._runs), (len(self._links), ())]:
            for i in range(start, first):
                yield i, self._links[i]
            start = first + len(run)

    def __len__(self) -> int:
        return len(self._links)

    def __getitem__(self, i):
        if i.__class__ is slice:
            return tuple(self[j] for j in range(*i.indices(len(self._links))))
        link = self._links[i]  # IndexError and negative indices as a tuple's
        if link is None:
            i = i if i >= 0 else i + len(self._links)
            k = bisect_right(self._firsts, i) - 1
            link = self._links[i] = self._runs[k].link(i - self._firsts[k], i)
            self._unmade -= 1
        return link

    def __iter__(self):
        """Every link in order (reading them all makes every record once)."""
        if self._unmade:
            for i, link in enumerate(self._links):
                if link is None:
                    self[i]
        return iter(self._links)

    def __eq__(self, other) -> bool:
        if isinstance(other, (LinkTable, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"LinkTable({len(self)} links, {len(self._runs)} switch runs)"
