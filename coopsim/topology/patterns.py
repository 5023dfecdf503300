"""Link patterns: each turns a list of device vertices into directed links.

The patterns receive already-validated arguments (see ``schema.py``) and append to a
``GraphBuilder``. Invariants of every pattern:
- it never makes a self-link, nor the same directed (src, dst) pair twice;
- its links are added in a fixed order (documented per pattern), so link indices — and with
  them the route tie-break — depend only on the spec (C9);
- the vertices it creates get names from the builder's counters: ``sw<k>`` for switches
  (k counts every switch of the topology, in creation order), ``nic<i>`` for per-device
  NICs (i = device index), ``nic<n>.tx`` / ``nic<n>.rx`` for per-node NICs (n = node),
  ``netsw`` for the network switch;
- it records on ``GraphBuilder.stated`` the router of ``stated.py`` that numbers its routes.
"""

from __future__ import annotations

from dataclasses import dataclass

from coopsim.topology import stated
from coopsim.topology.linktable import LinkTable, SwitchRun
from coopsim.topology.model import Link


class GraphBuilder:
    """Accumulates vertices (devices first) and directed links in creation order."""

    def __init__(self, num_devices: int):
        self.vertices: list[str] = [f"dev{i}" for i in range(num_devices)]
        self.links = LinkTable()  # Links by index; a switch's as one run (linktable.py)
        self._switches = 0
        self._names: set[str] = set()
        self.reductions: dict = {}  # switch vertex -> InNetworkReduction, if it declares one
        self.stated: list = []  # per pattern laid, its stated.py router (in creation order)

    def vertex(self, name: str) -> str:
        self.vertices.append(name)
        return name

    def switch(self) -> str:
        name = self.vertex(f"sw{self._switches}")
        self._switches += 1
        return name

    def state(self, router) -> None:
        self.stated.append(router)

    def add(self, pairs, bandwidth_GBps: float, latency_ns: float, origin: str) -> None:
        """Add one link per (src, dst) pair, skipping self-pairs and repeats within ``pairs``."""
        done = set()
        for src, dst in pairs:
            if src == dst or (src, dst) in done:
                continue
            done.add((src, dst))
            self.link(src, dst, bandwidth_GBps, latency_ns, origin)

    def link(self, src: str, dst: str, bandwidth_GBps: float, latency_ns: float, origin: str) -> None:
        """Add the link ``src -> dst`` (distinct vertices); a parallel one gets a ``#k`` name."""
        name = f"{src}->{dst}"
        if name in self._names:  # parallel links from different patterns
            k = 2
            while f"{name}#{k}" in self._names:
                k += 1
            name = f"{name}#{k}"
        self._names.add(name)
        self.links.append(Link(len(self.links), src, dst, float(bandwidth_GBps), float(latency_ns),
                               name, origin))


@dataclass(frozen=True)
class LinkSpec:
    """Bandwidth and latency of the links a pattern makes."""

    bandwidth_GBps: float
    latency_ns: float


def ring(b: GraphBuilder, devs: list[str], spec: LinkSpec, bidirectional: bool, origin: str) -> None:
    """``devs[i] -> devs[i+1 mod n]`` for all i, then (if bidirectional) the reverse links."""
    n = len(devs)
    forward = [(devs[i], devs[(i + 1) % n]) for i in range(n)]
    backward = [(dst, src) for src, dst in forward] if bidirectional else []
    b.state(stated.RingRoutes(len(b.links), _indices(devs), bidirectional))
    b.add(forward + backward, spec.bandwidth_GBps, spec.latency_ns, origin)


def fully_connected(b: GraphBuilder, devs: list[str], spec: LinkSpec, origin: str) -> None:
    """One link per ordered pair, in row-major order of (src, dst)."""
    b.state(stated.FullyConnectedRoutes(len(b.links), _indices(devs)))
    b.add([(s, d) for s in devs for d in devs], spec.bandwidth_GBps, spec.latency_ns, origin)


def switch(b: GraphBuilder, devs: list[str], spec: LinkSpec, switch_latency_ns: float,
           origin: str) -> str:
    """A new switch vertex (returned); per device an up-link (dev->sw) then a down-link (sw->dev).

    The switch's own latency is charged on the down-link, so device->device crosses two
    links and costs ``2 * latency_ns + switch_latency_ns``.
    """
    sw = b.switch()
    b.state(stated.SwitchRoutes(len(b.links), _indices(devs)))
    # one run, its Link records made when read: their names cannot clash with another
    # link's (each ends at the new vertex ``sw``, and no later pattern links to it)
    b.links.add_run(SwitchRun(devs, sw, spec.bandwidth_GBps, spec.latency_ns,
                              spec.latency_ns + switch_latency_ns, origin))
    return sw


def torus2d(b: GraphBuilder, devs: list[str], spec: LinkSpec, rows: int, cols: int,
            origin: str) -> None:
    """``devs`` laid out row-major on a rows x cols grid with wrap-around in both dimensions.

    Per device, in row-major order: links to the next column, the previous column, the next
    row, the previous row (a dimension of size 2 gives one link each way, of size 1 none).
    """
    pairs = []
    for r in range(rows):
        for c in range(cols):
            here = devs[r * cols + c]
            pairs += [(here, devs[r * cols + (c + 1) % cols]),
                      (here, devs[r * cols + (c - 1) % cols]),
                      (here, devs[((r + 1) % rows) * cols + c]),
                      (here, devs[((r - 1) % rows) * cols + c])]
    b.state(stated.TorusRoutes(len(b.links), _indices(devs), rows, cols))
    b.add(pairs, spec.bandwidth_GBps, spec.latency_ns, origin)


def hierarchical(b: GraphBuilder, devs: list[str], devices_per_node: int, intra, nic: LinkSpec,
                 nic_per_device: bool, network_switch_latency_ns: float, origin: str) -> None:
    """Nodes of ``devices_per_node`` consecutive devices, joined through NICs and one switch.

    ``intra(builder, node_devs, origin)`` lays the in-node pattern on each node, node by
    node. Then the NICs, in device (or node) order:
    - device <-> NIC links (the PCIe side) have the NIC's bandwidth and zero latency;
    - NIC <-> ``netsw`` links have the NIC's bandwidth and ``nic.latency_ns``; the switch
      latency is charged on the ``netsw -> NIC`` link.
    So an inter-node route is dev -> NIC -> netsw -> NIC -> dev (4 links, one-way latency
    ``2 * nic.latency_ns + switch_latency_ns``). A per-node NIC is two vertices, ``.tx`` and
    ``.rx``, so that two devices of one node never route through their shared NIC.
    """
    nodes = [devs[i:i + devices_per_node] for i in range(0, len(devs), devices_per_node)]
    outer = len(b.stated)
    for node_devs in nodes:
        intra(b, node_devs, f"{origin}.intra")
    per_node = b.stated[outer:]  # each node's router, replaced by the whole pattern's below
    del b.stated[outer:]
    nic_first = len(b.links)
    nic_origin, net_origin = f"{origin}.nic.host", f"{origin}.nic.network"
    if nic_per_device:
        # (devices behind the NIC, egress vertex, ingress vertex): one vertex per NIC.
        cards = [([d], f"nic{d[len('dev'):]}", f"nic{d[len('dev'):]}") for d in devs]
        for _, name, _ in cards:
            b.vertex(name)
    else:
        cards = [(node_devs, f"nic{n}.tx", f"nic{n}.rx") for n, node_devs in enumerate(nodes)]
        for _, tx, rx in cards:
            b.vertex(tx)
            b.vertex(rx)
    netsw = b.vertex("netsw")
    for behind, tx, rx in cards:
        for d in behind:
            b.add([(d, tx), (rx, d)], nic.bandwidth_GBps, 0.0, nic_origin)
        b.add([(tx, netsw)], nic.bandwidth_GBps, nic.latency_ns, net_origin)
        b.add([(netsw, rx)], nic.bandwidth_GBps,
              nic.latency_ns + network_switch_latency_ns, net_origin)
    # routes.py compares latencies in integer ps: the 4 links of a network path, and one in-node
    # link (a route of 4 links inside a node is a ring's or a torus's, whose links are equal)
    nic_ps = round(nic.latency_ns * 1000) + round((nic.latency_ns + network_switch_latency_ns) * 1000)
    first_intra = per_node[0].first
    intra_ps = round(b.links[first_intra].latency_ns * 1000) if nic_first > first_intra else 0
    out = stated.HierarchicalRoutes(per_node, devices_per_node, nic_first, nic_per_device,
                                    nic_ps, intra_ps)
    b.state(out)


def _indices(devs: list[str]) -> list[int]:
    """Device indices of device vertex names (``dev<i>``)."""
    return [int(d[len("dev"):]) for d in devs]
