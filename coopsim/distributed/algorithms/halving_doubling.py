"""Recursive halving and doubling, for any number of ranks.

Reduce-scatter by recursive vector halving (distance p'/2 first), all-gather by recursive
doubling (distance 1 first), all-reduce as the two in sequence: Rabenseifner's algorithm, as
analysed in Thakur, Rabenseifner & Gropp 2005 ("Optimization of Collective Communication
Operations in MPICH", IJHPCA 19(1)).

Any p: let p' = 2^floor(lg p) and r = p - p'. The first 2r ranks pair up (2i, 2i+1). In a
pre-step each odd rank 2i+1 folds its data into rank 2i; the p' "new ranks" then run the
power-of-two algorithm; in a post-step rank 2i hands rank 2i+1 its result. New rank i is old
rank 2i for i < r, else i + r (``_old_ranks``), so new rank i owns the old-rank chunks
``[old[i], old[i+1])`` -- contiguous, in order, two chunks for i < r, one otherwise.
"""

import numpy as np

from coopsim.distributed.algorithms.schedule import BUFFERS, Step, Xfer, chunks, make_schedule


def power_of_two_split(p):
    """(p', r): the largest power of two <= p, and the surplus p - p'."""
    p2 = 1 << (p.bit_length() - 1)
    return p2, p - p2


def _old_ranks(p):
    """``old[i]``: the old rank that plays new rank i, for i in 0..p'; ``old[p'] == p`` closes
    the last chunk range."""
    p2, r = power_of_two_split(p)
    return [2 * i if i < r else i + r for i in range(p2)] + [p]


def _halving(p2, old, bounds, buf, reduce_into):
    """Recursive halving among new ranks: at distance d = p'/2, p'/4, ..., 1 each new rank sends
    the half of its current range that its partner keeps. ``bounds[i]`` is where new rank i's
    final range starts (bounds[p'] is the end). Ends with new rank i holding its range. Steps
    built as columns (ADR-0027): new rank i's transfer is the step's i-th."""
    new, old, bounds, code = np.arange(p2), np.asarray(old), np.asarray(bounds), BUFFERS.index(buf)
    steps = []
    d = p2 // 2
    while d:
        partner = new ^ d
        first = partner & ~(d - 1)
        lo = bounds[first]
        count = bounds[first + d] - lo
        steps.append(Step.of_columns(old[:p2], old[partner], code, lo, code, lo, count, reduce_into))
        d //= 2
    return steps


def _doubling(p2, old, bounds, buf):
    """Recursive doubling among new ranks: at distance d = 1, 2, ..., p'/2 each new rank sends
    the range it has gathered so far (its aligned block of d new ranks) to its partner."""
    new, old, bounds, code = np.arange(p2), np.asarray(old), np.asarray(bounds), BUFFERS.index(buf)
    steps = []
    d = 1
    while d < p2:
        first = new & ~(d - 1)
        lo = bounds[first]
        count = bounds[first + d] - lo
        steps.append(Step.of_columns(old[:p2], old[new ^ d], code, lo, code, lo, count, False))
        d *= 2
    return steps


def all_reduce(p, n):
    """Rabenseifner all-reduce of n elements, split into p' near-equal chunks.

    Pre-step: rank 2i+1 sends everything to 2i, which reduces (i < r). Post-step: 2i sends the
    result to 2i+1. Every rank ends with the same bits: each element is reduced once, at one
    new rank, and copied from there."""
    p2, r = power_of_two_split(p)
    old = _old_ranks(p)
    bounds = [off for off, _ in chunks(n, p2)] + [n]
    pre = [[Xfer(2 * i + 1, 2 * i, "out", 0, "out", 0, n, True) for i in range(r)]]
    post = [[Xfer(2 * i, 2 * i + 1, "out", 0, "out", 0, n, False) for i in range(r)]]
    steps = pre + _halving(p2, old, bounds, "out", True) + _doubling(p2, old, bounds, "out") + post
    return make_schedule("all_reduce", "halving_doubling", p, steps, n, n)


def reduce_scatter(p, count):
    """Recursive-halving reduce-scatter into a "tmp" copy of the input ("in" is never written).

    Step 0: every rank that takes part copies "in" to "tmp"; rank 2i+1 (i < r) sends its whole
    input to 2i, which reduces it into "tmp" after its copy. Last step: each new rank copies its
    own chunk to "out" and, if it stands for a pair, sends the odd rank's chunk to it."""
    p2, r = power_of_two_split(p)
    old = _old_ranks(p)
    n = p * count
    bounds = [old[i] * count for i in range(p2 + 1)]
    setup = [Xfer(old[i], old[i], "in", 0, "tmp", 0, n, False) for i in range(p2)]
    setup += [Xfer(2 * i + 1, 2 * i, "in", 0, "tmp", 0, n, True) for i in range(r)]
    final = []
    for i in range(p2):
        for q in range(old[i], old[i + 1]):
            final.append(Xfer(old[i], q, "tmp", q * count, "out", 0, count, False))
    steps = [setup] + _halving(p2, old, bounds, "tmp", True) + [final]
    return make_schedule("reduce_scatter", "halving_doubling", p, steps, n, count, tmp_count=n)


def all_gather(p, count):
    """Recursive-doubling all-gather in "out".

    Step 0: every rank places its chunk; rank 2i+1 (i < r) also sends it to 2i. Then recursive
    doubling among the new ranks; last, 2i sends the whole result to 2i+1."""
    p2, r = power_of_two_split(p)
    old = _old_ranks(p)
    n = p * count
    bounds = [old[i] * count for i in range(p2 + 1)]
    setup = [Xfer(q, q, "in", 0, "out", q * count, count, False) for q in range(p)]
    setup += [Xfer(2 * i + 1, 2 * i, "in", 0, "out", (2 * i + 1) * count, count, False)
              for i in range(r)]
    post = [[Xfer(2 * i, 2 * i + 1, "out", 0, "out", 0, n, False) for i in range(r)]]
    steps = [setup] + _doubling(p2, old, bounds, "out") + post
    return make_schedule("all_gather", "halving_doubling", p, steps, count, n)
