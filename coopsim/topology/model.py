"""The validated machine model: device kinds, devices, directed links, and routes.

Units (C10): bandwidth in GB/s (1 GB/s = 1e9 bytes/s = 1 byte/ns, as nccl-tests counts),
latency in ns, memory in bytes, compute in FLOP/s per dtype.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from coopsim.topology.errors import TopologyError
from coopsim.topology.linktable import LinkTable
from coopsim.topology.routes import NO_LINK, reachable, shortest_path_tree

DTYPES = ("float32", "float16", "bfloat16", "float64", "int32", "int64")


@dataclass(frozen=True)
class DeviceKind:
    """One model of accelerator. ``peak_flops`` maps dtype names (among ``DTYPES``) to FLOP/s.

    ``peak_flops`` is a read-only mapping (a copy of the dict given): a parsed topology is
    shared by every context made from the same config (docs/adr/0030), so a kind must not
    change under one context because another wrote to it; the hash uses it too.
    """

    name: str
    memory_bytes: int
    memory_bandwidth_GBps: float
    peak_flops: Mapping[str, float]
    launch_overhead_ns: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "peak_flops", MappingProxyType(dict(self.peak_flops)))

    def __hash__(self) -> int:
        return hash((self.name, self.memory_bytes, self.memory_bandwidth_GBps,
                     tuple(sorted(self.peak_flops.items())), self.launch_overhead_ns))

    def __reduce__(self):  # a mappingproxy does not pickle: rebuild from a plain dict
        return (DeviceKind, (self.name, self.memory_bytes, self.memory_bandwidth_GBps,
                             dict(self.peak_flops), self.launch_overhead_ns))


@dataclass(frozen=True, slots=True)
class Device:
    """Device ``index`` is owned by rank ``index``; its graph vertex is ``name`` (``"dev<index>"``).

    ``node`` is the host it sits in (0 unless a ``hierarchical`` pattern says otherwise).
    """

    index: int
    kind: DeviceKind
    node: int
    name: str


@dataclass(frozen=True, slots=True)
class Link:
    """A DIRECTED link from vertex ``src`` to vertex ``dst`` (a full-duplex cable is two links).

    ``origin`` says which spec entry made it (e.g. ``"links[0] (ring)"``, ``"links[1].nic"``);
    it is informational and not part of equality.
    """

    index: int
    src: str
    dst: str
    bandwidth_GBps: float
    latency_ns: float
    name: str
    origin: str = field(default="", compare=False)

    @property
    def bytes_per_ns(self) -> float:
        """Bandwidth in bytes per ns; equal to ``bandwidth_GBps`` since 1 GB/s = 1 byte/ns."""
        return self.bandwidth_GBps


@dataclass(frozen=True)
class InNetworkReduction:
    """A switch that reduces in the network (NVLink SHARP, "NVLS"): a device sends its data up
    once and gets the reduced result down, at ``efficiency`` of the links' bandwidth, after a
    fixed ``latency_ns`` per collective."""

    efficiency: float
    latency_ns: float


class Topology:
    """Devices, vertices and directed links, with deterministic routes between devices.

    Immutable once built (so contexts share it): its public attributes cannot be set, its
    devices, links and vertices are tuples of frozen records, ``in_network_reduction`` is a
    read-only mapping; only ``_``-prefixed memos of pure results fill in lazily.

    Invariants (checked by the constructor, which raises ``TopologyError``):
    - ``devices[i].index == i`` and ``devices[i].name`` is a vertex;
    - ``links[i].index == i``; every link joins two distinct vertices, has bandwidth > 0 and
      latency >= 0;
    - every device can reach every other device.

    ``route(src, dst)`` is a pure function of the topology (C9). Route trees are computed
    lazily, one per source device, and cached on the instance (never in module state); where
    the topology's one pattern states its routes (``stated``), no search is needed.
    """

    def __init__(self, name: str, source: str, devices, links, vertices, description: str = "",
                 protocols: str | None = None, in_network_reduction=None, stated=None):
        """``protocols``: ``"nccl"`` if collectives run NCCL's protocols on this machine, else
        None (ideal steps). ``in_network_reduction``: switch vertex -> ``InNetworkReduction``.
        ``stated``: the router of the one pattern that makes every link (``stated.py``), if
        any; it is used only if it covers every device."""
        self.protocols = protocols
        self.in_network_reduction = MappingProxyType(dict(in_network_reduction or {}))
        self.name = name
        self.source = str(source)
        self.description = description
        self.devices: tuple[Device, ...] = tuple(devices)
        # read-only, by index; a switch's links are made when first read (linktable.py)
        self.links: LinkTable = (links if isinstance(links, LinkTable) else LinkTable(links)).seal()
        self.vertices: tuple[str, ...] = tuple(vertices)
        self._vertex_index = {v: i for i, v in enumerate(self.vertices)}
        self._check()
        # routes stated by the topology's one pattern (stated.py), else None: search the graph
        self.stated = stated if stated is not None and stated.covers(len(self.devices)) else None
        self._adjacent = None  # (out, in): the graph the search walks, built on first use
        if self.stated is None:  # a stated pattern is connected by construction
            self._check_connected()
        self._trees: dict[int, list[int]] = {}
        self._routes: dict[tuple[int, int], tuple[Link, ...]] = {}
        self._sealed = True

    def __setattr__(self, name: str, value) -> None:
        """Public attributes are fixed once built: contexts share a topology (``load_topology``);
        the ``_``-prefixed memos (routes, trees, adjacency) only ever cache pure results."""
        if not name.startswith("_") and getattr(self, "_sealed", False):
            raise AttributeError(f"Topology {self.name!r} is immutable (contexts share it): "
                                 f"cannot set {name!r}")
        object.__setattr__(self, name, value)

    def _adjacency(self):
        """``(out, in)``: per vertex its ``(link, dst, latency_ps)`` out-links, and per vertex
        ``{src: [(link, latency_ps), ...]}`` of its in-links (routes.py's inputs)."""
        if self._adjacent is None:
            out: list[list[tuple[int, int, int]]] = [[] for _ in self.vertices]
            for link in self.links:
                out[self._vertex_index[link.src]].append(
                    (link.index, self._vertex_index[link.dst], round(link.latency_ns * 1000)))
            into: list[dict[int, list[tuple[int, int]]]] = [{} for _ in self.vertices]
            for u, links in enumerate(out):
                for link, w, lat in links:
                    into[w].setdefault(u, []).append((link, lat))
            self._adjacent = (out, into)
        return self._adjacent

    # -- construction checks ---------------------------------------------------------------

    def _fail(self, key_path: str, expected: str, got: str):
        raise TopologyError(self.source, key_path, expected, got)

    def _check(self) -> None:
        if not self.devices:
            self._fail("devices", "at least one device", "none")
        if len(self._vertex_index) != len(self.vertices):
            dup = next(v for v, c in Counter(self.vertices).items() if c > 1)
            self._fail("vertices", "distinct vertex names", f"{dup!r} more than once")
        for i, d in enumerate(self.devices):
            if d.index != i:
                self._fail(f"devices[{i}].index", f"{i}", repr(d.index))
            if d.name not in self._vertex_index:
                self._fail(f"devices[{i}].name", "a vertex name", repr(d.name))
        vertex = self._vertex_index
        links = self.links
        bad = [range(first, first + len(run)) for first, run in links.runs if not run.check(vertex)]
        checks = links.explicit()
        if bad:  # an invalid run: check its links one by one, in index order with the others
            checks = sorted([*checks, *((i, links[i]) for r in bad for i in r)], key=lambda p: p[0])
        for i, link in checks:
            # one test per link (a valid run's links are valid); the failing one in detail
            if not (link.index == i and link.src in vertex and link.dst in vertex
                    and link.src != link.dst and link.bandwidth_GBps > 0 and link.latency_ns >= 0):
                self._fail_link(i, link)

    def _fail_link(self, i: int, link: Link):
        where = f"links[{i}]"
        if link.index != i:
            self._fail(f"{where}.index", f"{i}", repr(link.index))
        for end in ("src", "dst"):
            if getattr(link, end) not in self._vertex_index:
                self._fail(f"{where}.{end}", "a vertex name", repr(getattr(link, end)))
        if link.src == link.dst:
            self._fail(where, "a link between two distinct vertices", f"a self-link on {link.src}")
        if not link.bandwidth_GBps > 0:
            self._fail(f"{where}.bandwidth_GBps", "a positive number", repr(link.bandwidth_GBps))
        self._fail(f"{where}.latency_ns", "a non-negative number", repr(link.latency_ns))

    def _check_connected(self) -> None:
        """Every device reaches every other iff all reach dev0 and dev0 reaches all: O(V + E)."""
        forward = [[w for _, w, _ in out] for out in self._adjacency()[0]]
        backward: list[list[int]] = [[] for _ in self.vertices]
        for u, succ in enumerate(forward):
            for w in succ:
                backward[w].append(u)
        first = self.devices[0].name
        start = self._vertex_index[first]
        from_first, to_first = reachable(forward, start), reachable(backward, start)
        for d in self.devices:
            v = self._vertex_index[d.name]
            if not from_first[v]:
                self._fail("links", "every device to reach every other device",
                           f"no route from {first} to {d.name}")
            if not to_first[v]:
                self._fail("links", "every device to reach every other device",
                           f"no route from {d.name} to {first}")

    # -- queries ----------------------------------------------------------------------------

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def device(self, i: int) -> Device:
        return self.devices[self._device_index(i)]

    def _device_index(self, i) -> int:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"{self.name}: a device index must be an int, got {i!r}")
        if not 0 <= i < len(self.devices):
            raise IndexError(f"{self.name}: device index {i} out of range 0..{len(self.devices) - 1}")
        return i

    def route(self, src: int, dst: int) -> tuple[Link, ...]:
        """The links a transfer from device ``src`` to device ``dst`` crosses, in order.

        ``()`` when ``src == dst``. The path has the fewest hops, then the lowest total
        latency, then the lexicographically smallest tuple of link indices (C9).
        """
        key = (self._device_index(src), self._device_index(dst))
        cached = self._routes.get(key)
        if cached is not None:
            return cached
        if src == dst:
            route = ()
        elif self.stated is not None:
            route = tuple(self.links[i] for i in self.stated.route(src, dst))
        else:
            route = self.searched_route(src, dst)
        self._routes[key] = route
        return route

    def searched_route(self, src: int, dst: int) -> tuple[Link, ...]:
        """``route(src, dst)`` found by searching the graph, whatever the pattern states (the
        reference that stated routes are tested against); not cached."""
        src, dst = self._device_index(src), self._device_index(dst)
        if src == dst:
            return ()
        out, into = self._adjacency()
        s, d = self._vertex_index[self.devices[src].name], self._vertex_index[self.devices[dst].name]
        short = _short_path(out, into, s, d)
        if short is not None:
            return tuple(self.links[i] for i in short)
        tree = self._trees.get(src)
        if tree is None:
            tree = self._trees[src] = shortest_path_tree(out, s)
        path = []
        v = self._vertex_index[self.devices[dst].name]
        while tree[v] != NO_LINK:
            link = self.links[tree[v]]
            path.append(link)
            v = self._vertex_index[link.src]
        return tuple(reversed(path))

    def route_class(self, src: int, dst: int):
        """A key such that pairs with equal keys have routes whose links have equal latencies
        and bandwidths, position by position: the pattern's class where it states routes
        (``stated.py``), else the pair itself. For costing one pair per class."""
        if src == dst:
            return None
        if self.stated is None:
            return (src, dst)
        return self.stated.route_class(self._device_index(src), self._device_index(dst))

    @property
    def one_route_class(self) -> bool:
        """Every pair of distinct devices has the same ``route_class`` (a switch, a fully
        connected set): costing one pair costs them all."""
        return self.stated is not None and self.stated.one_class

    def describe(self) -> str:
        """A short summary: name, devices per kind, vertices, links per originating pattern."""
        kinds = Counter(d.kind.name for d in self.devices)
        nodes = len({d.node for d in self.devices})
        per_kind = ", ".join(f"{c} x {k}" for k, c in kinds.items())
        lines = [f"{self.name}: {self.num_devices} devices ({per_kind})"
                 + (f" in {nodes} nodes" if nodes > 1 else "")
                 + f", {len(self.vertices) - self.num_devices} other vertices, "
                 f"{len(self.links)} directed links (from {self.source})"]
        groups: dict[str, list[Link]] = {}
        for link in self.links:
            groups.setdefault(link.origin or "links", []).append(link)
        for origin, links in groups.items():
            bws = sorted({lk.bandwidth_GBps for lk in links})
            lats = sorted({lk.latency_ns for lk in links})
            lines.append(f"  {origin}: {len(links)} links, {_span(bws)} GB/s, {_span(lats)} ns")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Topology(name={self.name!r}, devices={self.num_devices}, "
                f"links={len(self.links)}, source={self.source!r})")

    def reducing_switch(self, devices):
        """``(up_links, down_links, InNetworkReduction)`` of a switch that declares in-network
        reduction and has a direct up-link and down-link for every device index in
        ``devices`` (in that order), or None."""
        for switch in sorted(self.in_network_reduction):
            up = {lk.src: lk for lk in self.links if lk.dst == switch}
            down = {lk.dst: lk for lk in self.links if lk.src == switch}
            names = [self.devices[self._device_index(d)].name for d in devices]
            if all(n in up and n in down for n in names):
                return ([up[n] for n in names], [down[n] for n in names],
                        self.in_network_reduction[switch])
        return None


def _span(values: list[float]) -> str:
    return f"{values[0]:g}" if len(values) == 1 else f"{values[0]:g}..{values[-1]:g}"


SHORT_HOPS = 4  # routes of up to this many links are found without a whole route tree
SHORT_PATHS = 4096  # ... unless a side enumerates more partial paths than this


def _short_path(out, into, s: int, d: int):
    """The best path from vertex ``s`` to ``d`` if it has at most ``SHORT_HOPS`` links, as a
    tuple of link indices (None: longer, or too many partial paths — use the route tree).

    Meet in the middle: the paths of ``h`` links are the forward paths of ``ceil(h/2)``
    links from ``s`` joined with the backward paths of ``floor(h/2)`` links into ``d``; for the
    smallest ``h`` that has any, the best by (total latency in ps, link-index tuple) is the
    route tree's choice (the order of ``routes.py``), at a cost that does not grow with the
    number of devices on a switch, a ring or a torus.
    """
    forward = {s: [(0, ())]}  # vertex -> [(latency_ps, links)] of the paths of `depth` links
    backward = {d: [(0, ())]}
    depth_f = depth_b = 0
    for h in range(1, SHORT_HOPS + 1):
        if depth_f < (h + 1) // 2:
            forward, depth_f = _extend(forward, out, False), depth_f + 1
        else:
            backward, depth_b = _extend(backward, into, True), depth_b + 1
        if forward is None or backward is None:
            return None
        best = None
        for v, heads in forward.items():
            tails = backward.get(v)
            if tails is None:
                continue
            for lat_h, head in heads:
                for lat_t, tail in tails:
                    key = (lat_h + lat_t, head + tail)
                    if best is None or key < best:
                        best = key
        if best is not None:  # a walk of the fewest links never repeats a vertex: a path
            return best[1]
    return None


def _extend(paths: dict, edges, reverse: bool):
    """Every path of ``paths`` one link longer (None beyond ``SHORT_PATHS`` paths)."""
    longer: dict = {}
    count = 0
    for v, partial in paths.items():
        if reverse:
            steps = [(link, u, lat) for u, links in edges[v].items() for link, lat in links]
        else:
            steps = edges[v]
        for link, w, lat in steps:
            bucket = longer.setdefault(w, [])
            for lat_p, links in partial:
                bucket.append((lat_p + lat, (link,) + links if reverse else links + (link,)))
            count += len(partial)
            if count > SHORT_PATHS:
                return None
    return longer

