"""Which algorithm builds which collective: ``build_schedule`` and the table behind it.

The table is built once, at import, and never changes (a read-only mapping)."""

import operator
from types import MappingProxyType

from coopsim.distributed.algorithms import direct, halving_doubling, hierarchical, ring, trees
from coopsim.distributed.tables import COLLECTIVES, IN_PLACE, ROOTED  # noqa: F401 - re-exported

BUILDERS = MappingProxyType({
    ("all_reduce", "ring"): ring.all_reduce,
    ("reduce_scatter", "ring"): ring.reduce_scatter,
    ("all_gather", "ring"): ring.all_gather,
    ("broadcast", "ring"): ring.broadcast,
    ("all_reduce", "halving_doubling"): halving_doubling.all_reduce,
    ("reduce_scatter", "halving_doubling"): halving_doubling.reduce_scatter,
    ("all_gather", "halving_doubling"): halving_doubling.all_gather,
    ("broadcast", "binomial_tree"): trees.binomial_broadcast,
    ("reduce", "binomial_tree"): trees.binomial_reduce,
    ("all_reduce", "binomial_tree"): trees.binomial_all_reduce,
    ("gather", "binomial_tree"): trees.binomial_gather,
    ("scatter", "binomial_tree"): trees.binomial_scatter,
    ("broadcast", "double_binary_tree"): trees.double_tree_broadcast,
    ("reduce", "double_binary_tree"): trees.double_tree_reduce,
    ("all_reduce", "double_binary_tree"): trees.double_tree_all_reduce,
    ("all_reduce", "direct"): direct.all_reduce,
    ("reduce_scatter", "direct"): direct.reduce_scatter,
    ("all_gather", "direct"): direct.all_gather,
    ("all_to_all", "direct"): direct.all_to_all,
    ("gather", "direct"): direct.gather,
    ("scatter", "direct"): direct.scatter,
    ("broadcast", "direct"): direct.broadcast,
    ("reduce", "direct"): direct.reduce,
    ("all_reduce", "hierarchical"): hierarchical.all_reduce,
})

# Algorithms that reduce or multicast inside a switch (NVLink SHARP): no schedule of
# rank-to-rank transfers; they run where the topology declares in-network reduction (ADR-0024).
IN_NETWORK = frozenset({("all_reduce", "nvls"), ("reduce_scatter", "nvls"), ("all_gather", "nvls")})

ALGORITHMS = tuple(sorted({algorithm for _, algorithm in BUILDERS} | {"nvls"}))


def algorithms_for(collective):
    """The algorithms that implement ``collective``, sorted."""
    return sorted(algorithm for c, algorithm in (*BUILDERS, *sorted(IN_NETWORK)) if c == collective)


def check_supported(collective, algorithm):
    """Raise a ValueError that lists the alternatives unless (collective, algorithm) exists."""
    if collective not in COLLECTIVES:
        raise ValueError(f"unknown collective {collective!r}; collectives: "
                         f"{', '.join(COLLECTIVES)}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r} for {collective}; available for "
                         f"{collective}: {', '.join(algorithms_for(collective))}")
    if (collective, algorithm) not in BUILDERS and (collective, algorithm) not in IN_NETWORK:
        implements = sorted(c for c, a in (*BUILDERS, *IN_NETWORK) if a == algorithm)
        raise ValueError(f"algorithm {algorithm!r} does not implement {collective} (it "
                         f"implements {', '.join(implements)}); available for {collective}: "
                         f"{', '.join(algorithms_for(collective))}")


def build_schedule(collective, algorithm, p, n_or_count, root=None, nodes=None):
    """The Schedule of ``collective`` on ``p`` ranks by ``algorithm``.

    ``n_or_count``: the element count of each rank's buffer for the in-place collectives
    (all_reduce, broadcast, reduce), else the per-rank chunk count (torch's sizes). ``root`` is
    required for broadcast/reduce/gather/scatter and refused otherwise; ``nodes`` (the node id
    of every group rank) is used by ``hierarchical`` only."""
    check_supported(collective, algorithm)
    if (collective, algorithm) in IN_NETWORK:
        raise ValueError(f"{collective} by {algorithm} has no schedule: the switch reduces "
                         f"(it runs on a topology whose switch declares in_network_reduction)")
    p = _integer(p, 1, f"{collective} needs p >= 1 ranks")
    n_or_count = _integer(n_or_count, 0, f"{collective} needs a non-negative element count")
    if collective in ROOTED:
        root = _integer(root, 0, f"{collective} needs a root in 0..{p - 1}")
        if root >= p:
            raise ValueError(f"{collective} needs a root in 0..{p - 1}, got {root}")
        return BUILDERS[collective, algorithm](p, n_or_count, root)
    if root is not None:
        raise ValueError(f"{collective} takes no root, got root={root!r}")
    if algorithm == "hierarchical":
        return BUILDERS[collective, algorithm](p, n_or_count, nodes)
    return BUILDERS[collective, algorithm](p, n_or_count)


def _integer(value, lowest, message):
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{message}, got {value!r}") from None
    if value < lowest:
        raise ValueError(f"{message}, got {value!r}")
    return value
