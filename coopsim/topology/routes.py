"""Deterministic shortest paths over the directed link graph.

The order on paths (the routing contract, C9): fewest hops, then lowest total latency, then
the lexicographically smallest tuple of link indices. Latencies are compared as integer
picoseconds, so sums are exact and the tie-break never depends on float rounding.

The order is monotone (extending two paths of equal length by the same link keeps their
order), so a best path's prefixes are best paths too and one tree per source holds every
best route from that source. ``shortest_path_tree`` builds it breadth-first, one hop layer
at a time; within a layer the vertices are ranked by their path's link-index tuple, so the
tie-break compares two integers instead of two tuples.
"""

from __future__ import annotations

from collections.abc import Sequence

NO_LINK = -1


def shortest_path_tree(
    out_links: Sequence[Sequence[tuple[int, int, int]]], src: int
) -> list[int]:
    """Return, per vertex, the index of the last link of the best path from ``src`` (C9).

    ``out_links[v]`` lists ``(link_index, dst_vertex, latency_ps)`` for the links leaving
    ``v``. The result holds ``NO_LINK`` for ``src`` itself and for unreachable vertices.
    """
    n = len(out_links)
    parent = [NO_LINK] * n
    latency = [0] * n
    rank = [0] * n  # position of the vertex's path, in link-index order, within its layer
    seen = [False] * n
    seen[src] = True
    frontier = [src]
    while frontier:
        best: dict[int, tuple[int, int, int]] = {}  # vertex -> (latency_ps, parent rank, link)
        for u in frontier:
            lat_u, rank_u = latency[u], rank[u]
            for link, w, lat in out_links[u]:
                if seen[w]:
                    continue
                key = (lat_u + lat, rank_u, link)
                old = best.get(w)
                if old is None or key < old:
                    best[w] = key
        layer = sorted(best, key=lambda w: best[w][1:])  # by link-index tuple of the path
        for position, w in enumerate(layer):
            seen[w] = True
            latency[w] = best[w][0]
            rank[w] = position
            parent[w] = best[w][2]
        frontier = layer
    return parent


def reachable(out_links: Sequence[Sequence[int]], src: int) -> list[bool]:
    """Which vertices can be reached from ``src``; ``out_links[v]`` lists successor vertices."""
    seen = [False] * len(out_links)
    seen[src] = True
    stack = [src]
    while stack:
        u = stack.pop()
        for w in out_links[u]:
            if not seen[w]:
                seen[w] = True
                stack.append(w)
    return seen
