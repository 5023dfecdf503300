"""Routes that a link pattern states: O(1) per device pair (O(hops) to list a long path).

When a topology is made of one pattern entry over every device (a switch, a fully connected
set, a ring, a 2-D torus, or hierarchical nodes), that pattern's layout fixes its best routes
and the indices of their links, so ``Topology.route`` reads them here instead of searching
the graph (docs/adr/0030-ranks-at-scale.md). Each class below returns, per pair of distinct
device indices, exactly the route of the routing contract (``routes.py``: fewest hops, then
lowest total latency, then the smallest link-index tuple) — the link indices follow the
creation order that ``patterns.py`` documents; tests/test_routes_stated.py checks every pair
of every bundled topology and of generated ones against the graph search.

``route_class(s, d)``: a key such that two pairs with equal keys have routes whose links have
equal latencies and bandwidths, position by position (a pattern's links share one spec), so
the planner can cost one pair per class instead of every pair.

A pattern laid over a subset of devices, or several entries, states nothing: such topologies
are searched (``Topology.route``).
"""

from __future__ import annotations


class _Stated:
    """Link indices from ``first``; ``order``: the pattern's device indices, in its order.
    ``one_class``: every pair of distinct devices is of one route class."""

    one_class = False

    def __init__(self, first: int, order):
        self.first = first
        self.n = len(order)
        identity = all(d == i for i, d in enumerate(order))
        self._position = None if identity else {d: p for p, d in enumerate(order)}

    def pos(self, device: int) -> int:
        return device if self._position is None else self._position[device]

    def covers(self, num_devices: int) -> bool:
        """The pattern holds every device of a topology of ``num_devices``."""
        return self.n == num_devices


class SwitchRoutes(_Stated):
    """dev -> switch -> dev is the only path: per device the up-link, then the down-link."""

    one_class = True

    def route(self, s: int, d: int) -> tuple:
        return (self.first + 2 * self.pos(s), self.first + 2 * self.pos(d) + 1)

    def route_class(self, s: int, d: int):
        return ()


class FullyConnectedRoutes(_Stated):
    """The direct link, numbered row-major over (src, dst) without the diagonal."""

    one_class = True

    def route(self, s: int, d: int) -> tuple:
        p, q = self.pos(s), self.pos(d)
        return (self.first + p * (self.n - 1) + (q if q < p else q - 1),)

    def route_class(self, s: int, d: int):
        return ()


class RingRoutes(_Stated):
    """Forward links ``i -> i+1`` from ``first``, then (bidirectional, n >= 3) the backward
    links ``i+1 -> i`` from ``first + n``. The shorter way round; forward on a tie (its first
    link has the smaller index)."""

    def __init__(self, first: int, order, bidirectional: bool):
        super().__init__(first, order)
        self.backward = bidirectional and self.n >= 3

    def route(self, s: int, d: int) -> tuple:
        n, p = self.n, self.pos(s)
        k = (self.pos(d) - p) % n
        if self.backward and n - k < k:
            return tuple(self.first + n + (p - 1 - j) % n for j in range(n - k))
        return tuple(self.first + (p + j) % n for j in range(k))

    def route_class(self, s: int, d: int):
        k = (self.pos(d) - self.pos(s)) % self.n
        return (min(k, self.n - k) if self.backward else k,)


class TorusRoutes(_Stated):
    """Per device, in row-major order, its links to +column, -column, +row, -row (one link
    per direction of a dimension of 2, none of 1). Of the shortest paths (all links are
    equal), the smallest index tuple takes, at every vertex, the first of those four that
    still shortens the way: columns first, + on a tie."""

    def __init__(self, first: int, order, rows: int, cols: int):
        super().__init__(first, order)
        self.rows, self.cols = rows, cols
        self.col_links = min(cols - 1, 2)
        self.per_device = self.col_links + min(rows - 1, 2)

    def route(self, s: int, d: int) -> tuple:
        rows, cols = self.rows, self.cols
        r, c = divmod(self.pos(s), cols)
        tr, tc = divmod(self.pos(d), cols)
        links = []
        while c != tc:
            up = (tc - c) % cols <= (c - tc) % cols
            links.append(self._link(r, c, 0 if up else 1))
            c = (c + (1 if up else -1)) % cols
        while r != tr:
            up = (tr - r) % rows <= (r - tr) % rows
            links.append(self._link(r, c, self.col_links + (0 if up else 1)))
            r = (r + (1 if up else -1)) % rows
        return tuple(links)

    def _link(self, r: int, c: int, offset: int) -> int:
        return self.first + self.per_device * (r * self.cols + c) + offset

    def route_class(self, s: int, d: int):
        (r, c), (tr, tc) = divmod(self.pos(s), self.cols), divmod(self.pos(d), self.cols)
        return (min((tc - c) % self.cols, (c - tc) % self.cols)
                + min((tr - r) % self.rows, (r - tr) % self.rows),)


class HierarchicalRoutes:
    """Nodes of ``per_node`` consecutive devices (``intra``: one stated router per node),
    then the network cards: per device (``per_device``) dev->nic, nic->dev, nic->netsw,
    netsw->nic; or per node, per device dev->tx, rx->dev, then tx->netsw, netsw->rx.

    A pair on two nodes crosses its own cards and the switch: 4 links, the only path of 4.
    A pair on one node keeps to the node while that takes fewer than 4 links, leaves through
    the cards when it takes more, and at 4 takes the lower latency (the node's on a tie: its
    links have the smaller indices)."""

    one_class = False  # (one node of a switch would be, but then costing every class is cheap)

    def __init__(self, intra, per_node: int, nic_first: int, per_device: bool, nic_ps: int,
                 intra_ps: int):
        self.intra = intra
        self.per_node = per_node
        self.nic_first = nic_first
        self.per_device = per_device
        self.nic_ps = nic_ps  # latency in ps of the 4 network links (routes.py's comparison)
        self.intra_ps = intra_ps  # of one in-node link (a route of 4 in a node: ring or torus)
        self.n = per_node * len(intra)

    def covers(self, num_devices: int) -> bool:
        return self.n == num_devices

    def _network(self, s: int, d: int) -> tuple:
        if self.per_device:
            return (self.nic_first + 4 * s, self.nic_first + 4 * s + 2,
                    self.nic_first + 4 * d + 3, self.nic_first + 4 * d + 1)
        m = self.per_node
        card = 2 * m + 2
        (ns, js), (nd, jd) = divmod(s, m), divmod(d, m)
        return (self.nic_first + card * ns + 2 * js, self.nic_first + card * ns + 2 * m,
                self.nic_first + card * nd + 2 * m + 1, self.nic_first + card * nd + 2 * jd + 1)

    def _inside(self, s: int, d: int):
        """The node's route if the pair keeps to it, else None."""
        node = s // self.per_node
        if node != d // self.per_node:
            return None
        route = self.intra[node].route(s, d)
        if len(route) < 4:
            return route
        if len(route) == 4 and 4 * self.intra_ps <= self.nic_ps:
            return route
        return None

    def route(self, s: int, d: int) -> tuple:
        inside = self._inside(s, d)
        return self._network(s, d) if inside is None else inside

    def route_class(self, s: int, d: int):
        inside = self._inside(s, d)
        return ("net",) if inside is None else ("node", len(inside))
