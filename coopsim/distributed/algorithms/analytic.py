"""Closed-form collective times (the "analytic" model), and the ideal timing of a schedule.

``analytic_time_ns`` is the alpha-beta-gamma cost of Thakur, Rabenseifner & Gropp 2005
("Optimization of Collective Communication Operations in MPICH", IJHPCA 19(1)), derived for
the exact schedules this package builds (ADR-0009): steps x alpha + bytes on the critical path
x beta + bytes reduced on the critical path x gamma. ``nbytes`` is the paper's n: the size of
each rank's vector for all_reduce, broadcast and reduce; the TOTAL p * count * itemsize for
reduce_scatter, all_gather, all_to_all, gather and scatter (as nccl-tests reports sizes).

``schedule_time_ns`` runs a schedule on the ideal network the formulas assume, and is what they
are checked against:
- every pair of ranks has its own link; a transfer of b bytes takes alpha + b * beta;
- a transfer of step k starts when both its src and its dst have started step k (the receiver
  is ready: rendezvous), so it arrives after dst started the step;
- a reduction of b bytes costs b * gamma from the transfer's arrival; a rank's transfers and
  reductions of one step run concurrently (a step lasts the longest of them);
- a local copy (src == dst) costs nothing, a local reduction b * gamma;
- rank r finishes step k when all its transfers of step k, sent or received, are done.

The formulas equal ``schedule_time_ns`` (to float round-off) whenever the elements split evenly
(see ``exact_multiple``); otherwise the schedule's time lies between the formula at n rounded
down and n rounded up to a multiple of ``exact_multiple`` elements.
"""

from types import MappingProxyType

from coopsim.distributed.algorithms.halving_doubling import power_of_two_split
from coopsim.distributed.algorithms.hierarchical import node_rings
from coopsim.distributed.algorithms.registry import check_supported
from coopsim.distributed.tables import IN_PLACE


def schedule_time_ns(schedule, itemsize, alpha_ns, beta_ns_per_byte, gamma_ns_per_byte):
    """The time ``schedule`` takes on the ideal network above, elements of ``itemsize`` bytes."""
    start = [0.0] * schedule.p
    for step in schedule.steps:
        finish = list(start)
        for x in step.xfers:
            nbytes = x.count * itemsize
            reduce_ns = nbytes * gamma_ns_per_byte if x.reduce else 0.0
            if x.src == x.dst:
                finish[x.dst] = max(finish[x.dst], start[x.dst] + reduce_ns)
                continue
            arrive = max(start[x.src], start[x.dst]) + alpha_ns + nbytes * beta_ns_per_byte
            finish[x.src] = max(finish[x.src], arrive)
            finish[x.dst] = max(finish[x.dst], arrive + reduce_ns)
        start = finish
    return max(start)


def _lg(p):
    """ceil(lg p), which is also floor(lg(p-1)) + 1: the height of the double binary tree."""
    return (p - 1).bit_length()


def _min_sum(r, k):
    """sum of min(r, 2^j) for j < k: the extra chunks that the paired ranks add to the
    critical path of halving or doubling when p is not a power of two."""
    return sum(min(r, 1 << j) for j in range(k))


def _ring_all_reduce(p, n, a, b, g):
    return 2 * (p - 1) * a + 2 * (p - 1) / p * n * b + (p - 1) / p * n * g


def _hd_all_reduce(p, n, a, b, g):
    p2, r = power_of_two_split(p)
    core = 2 * _lg(p2) * a + 2 * (p2 - 1) / p2 * n * b + (p2 - 1) / p2 * n * g
    return core + (2 * a + 2 * n * b + n * g if r else 0.0)


def _hd_reduce_scatter(p, n, a, b, g):
    p2, r = power_of_two_split(p)
    c = n / p
    core = _lg(p2) * a + (p2 - 1 + _min_sum(r, _lg(p2))) * c * (b + g)
    return core + ((a + n * (b + g)) + (a + c * b) if r else 0.0)


def _hd_all_gather(p, n, a, b, g):
    p2, r = power_of_two_split(p)
    c = n / p
    core = _lg(p2) * a + (p2 - 1 + _min_sum(r, _lg(p2))) * c * b
    return core + ((a + c * b) + (a + n * b) if r else 0.0)


def _half(p, n):
    """Bytes one tree of the double binary tree carries (p = 2: one tree carries all)."""
    return n / 2 if p > 2 else n


def _hierarchical_all_reduce(p, n, a, b, g, nodes):
    rings = node_rings(p, nodes)
    local, count = len(rings[0]), len(rings)
    c = n / local
    intra = (local - 1) * (a + c * (b + g)) + (local - 1) * (a + c * b)
    return intra + _ring_all_reduce(count, c, a, b, g)


_FORMULAS = MappingProxyType({
    ("all_reduce", "ring"): _ring_all_reduce,
    ("reduce_scatter", "ring"): lambda p, n, a, b, g: (p - 1) * (a + n / p * (b + g)),
    ("all_gather", "ring"): lambda p, n, a, b, g: (p - 1) * (a + n / p * b),
    ("broadcast", "ring"): lambda p, n, a, b, g: (p - 1) * (a + n * b),
    ("all_reduce", "halving_doubling"): _hd_all_reduce,
    ("reduce_scatter", "halving_doubling"): _hd_reduce_scatter,
    ("all_gather", "halving_doubling"): _hd_all_gather,
    ("broadcast", "binomial_tree"): lambda p, n, a, b, g: _lg(p) * (a + n * b),
    ("reduce", "binomial_tree"): lambda p, n, a, b, g: _lg(p) * (a + n * b + n * g),
    ("all_reduce", "binomial_tree"): lambda p, n, a, b, g: _lg(p) * (2 * a + 2 * n * b + n * g),
    ("gather", "binomial_tree"): lambda p, n, a, b, g: _lg(p) * a + (p - 1) / p * n * b,
    ("scatter", "binomial_tree"): lambda p, n, a, b, g: _lg(p) * a + (p - 1) / p * n * b,
    ("broadcast", "double_binary_tree"):
        lambda p, n, a, b, g: _lg(p) * (a + _half(p, n) * b),
    ("reduce", "double_binary_tree"):
        lambda p, n, a, b, g: _lg(p) * (a + _half(p, n) * (b + g)),
    ("all_reduce", "double_binary_tree"):
        lambda p, n, a, b, g: _lg(p) * (2 * a + _half(p, n) * (2 * b + g)),
    ("all_reduce", "direct"): lambda p, n, a, b, g: a + n * (b + g),
    ("reduce", "direct"): lambda p, n, a, b, g: a + n * (b + g),
    ("broadcast", "direct"): lambda p, n, a, b, g: a + n * b,
    ("reduce_scatter", "direct"): lambda p, n, a, b, g: a + n / p * (b + g),
    ("all_gather", "direct"): lambda p, n, a, b, g: a + n / p * b,
    ("gather", "direct"): lambda p, n, a, b, g: a + n / p * b,
    ("scatter", "direct"): lambda p, n, a, b, g: a + n / p * b,
    ("all_to_all", "direct"): lambda p, n, a, b, g: (p - 1) * (a + n / p * b),
    ("all_reduce", "hierarchical"): _hierarchical_all_reduce,  # also takes nodes
    # nvls (ADR-0024): alpha is the switch's latency plus a device's link latency, beta the
    # inverse of link bandwidth x switch efficiency. A device's up-link and down-link run at
    # once: all_reduce sends n up (reduced in the switch) and n/p (its reduced part, to be
    # multicast) and receives n/p and n; reduce_scatter and all_gather move n one way, n/p
    # the other (n: the total, as nccl-tests counts).
    ("all_reduce", "nvls"): lambda p, n, a, b, g: a + (p + 1) / p * n * b,
    ("reduce_scatter", "nvls"): lambda p, n, a, b, g: a + n * b,
    ("all_gather", "nvls"): lambda p, n, a, b, g: a + n * b,
})

# Reducing steps of these move chunks of n / CHUNKS[...](p) bytes, so the pipelined reduction
# has the closed form of ``_pipelined_gamma``; other algorithms keep whole-chunk reductions in
# the analytic model (the transfer model pipelines every reducing transfer).
_CHUNKS = MappingProxyType({
    ("all_reduce", "ring"): lambda p: p, ("reduce_scatter", "ring"): lambda p: p,
    ("all_reduce", "direct"): lambda p: 1, ("reduce", "direct"): lambda p: 1,
    ("reduce_scatter", "direct"): lambda p: p,
})


def analytic_time_ns(collective, algorithm, p, nbytes, alpha_ns, beta_ns_per_byte,
                     gamma_ns_per_byte, nodes=None):
    """The closed-form time of ``collective`` by ``algorithm`` on ``p`` ranks, in ns.

    ``nbytes``: the vector size for all_reduce/broadcast/reduce, the total p * count * itemsize
    otherwise. ``nodes`` (a node id per rank) is needed by ``hierarchical``. p == 1 costs 0."""
    check_supported(collective, algorithm)
    if p == 1:
        return 0.0
    args = (p, nbytes, alpha_ns, beta_ns_per_byte, gamma_ns_per_byte)
    if algorithm == "hierarchical":
        args += (nodes,)
    return float(_FORMULAS[collective, algorithm](*args))


def _pipelined_gamma(chunk, b, g, slice_bytes):
    """The gamma that turns a reducing step's ``c * (b + g)`` into its pipelined time
    ``max(c*b, c*g - s*g) + s*g`` (s = min(slice, c); see ``protocols.pipelined_reduce_ns``)."""
    if not chunk or not g:
        return g
    s = min(slice_bytes, chunk)
    return (max(chunk * b, chunk * g - s * g) + s * g) / chunk - b


def model_time_ns(collective, algorithm, p, nbytes, alpha_ns, beta_ns_per_byte,
                  gamma_ns_per_byte, protocol, nodes=None):
    """``analytic_time_ns`` under ``protocol`` (a ``protocols.Protocol``): its base latency
    once, its step latency on every step's alpha, its efficiency on beta, and its slices on
    the reduction (pipelined, for the algorithms of ``_CHUNKS``). ``IDEAL`` changes nothing."""
    if p == 1:
        return 0.0
    gamma = gamma_ns_per_byte
    chunks = _CHUNKS.get((collective, algorithm))
    if protocol.slice_bytes is not None and chunks is not None:
        gamma = _pipelined_gamma(nbytes / chunks(p), beta_ns_per_byte / protocol.bandwidth_efficiency,
                                 gamma, protocol.slice_bytes)
    return protocol.base_latency_ns + analytic_time_ns(
        collective, algorithm, p, nbytes, alpha_ns + protocol.step_latency_ns,
        beta_ns_per_byte / protocol.bandwidth_efficiency, gamma, nodes)


def exact_multiple(collective, algorithm, p, nodes=None):
    """``analytic_time_ns`` is exact when the element count n (for all_reduce, broadcast,
    reduce; always for the other collectives, whose n is p * count) is a multiple of this."""
    if collective not in IN_PLACE:
        return 1
    if algorithm in ("ring", "hierarchical", "nvls") and collective == "all_reduce":
        return p
    if algorithm == "halving_doubling":
        return power_of_two_split(p)[0]
    if algorithm == "double_binary_tree" and p > 2:
        return 2
    return 1
