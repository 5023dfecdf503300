"""Hierarchical all-reduce for multi-node groups.

Three phases, each a ring (see ``ring``): (1) reduce-scatter inside every node, leaving the
rank with local index l holding part l of the node's sum; (2) all-reduce of part l among the
ranks with local index l, one per node; (3) all-gather inside every node. The rings of one
phase run side by side in the same steps. Local index = position among the node's ranks in
ascending group rank; nodes are ordered by ascending node id. Every node must have the same
number of ranks. Every rank gets the same bits: each element is reduced once, then copied.
"""

from coopsim.distributed.algorithms.ring import (
    all_gather_inplace,
    all_reduce_inplace,
    reduce_scatter_inplace,
)
from coopsim.distributed.algorithms.schedule import chunks, make_schedule, parallel


def node_rings(p, nodes):
    """The ranks of every node, in ascending rank, nodes in ascending id; a ValueError unless
    ``nodes`` gives a node id to each of the p ranks and every node has as many ranks."""
    if nodes is None or len(nodes) != p:
        raise ValueError(f"hierarchical needs nodes= with one node id per rank ({p}), "
                         f"got {nodes!r}")
    members = {}
    for rank, node in enumerate(nodes):
        members.setdefault(node, []).append(rank)
    rings = [members[node] for node in sorted(members)]
    sizes = {node: len(members[node]) for node in sorted(members)}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"hierarchical needs the same number of ranks on every node; "
                         f"ranks per node: {sizes}")
    return rings


def all_reduce(p, n, nodes):
    """Intra-node ring reduce-scatter, inter-node ring all-reduce, intra-node ring all-gather:
    2(L-1) + 2(N-1) steps for N nodes of L ranks."""
    rings = node_rings(p, nodes)
    local = len(rings[0])
    parts = chunks(n, local)
    across = [[ring[index] for ring in rings] for index in range(local)]
    steps = (parallel(*(reduce_scatter_inplace(ring, 0, n) for ring in rings))
             + parallel(*(all_reduce_inplace(ranks, off, count)
                          for ranks, (off, count) in zip(across, parts)))
             + parallel(*(all_gather_inplace(ring, 0, n) for ring in rings)))
    return make_schedule("all_reduce", "hierarchical", p, steps, n, n)
