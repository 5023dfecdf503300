"""Ring algorithms: each rank sends to its successor and receives from its predecessor.

All-reduce is a ring reduce-scatter followed by a ring all-gather, 2(p-1) steps, each moving
one of p near-equal chunks (Thakur, Rabenseifner & Gropp 2005, "Optimization of Collective
Communication Operations in MPICH", IJHPCA 19(1); Patarasuk & Yuan 2009 for the all-reduce).
Broadcast is a plain chain root -> root+1 -> ... (p-1 steps, no pipelining).

The in-place building blocks work on a region of "out" over any ring of ranks, so that the
hierarchical algorithm can reuse them. Invariant of ``reduce_scatter_inplace``: after its
L-1 steps, position i of the ring holds part i of the region, reduced over the whole ring;
``all_gather_inplace`` starts from that state.
"""

import numpy as np

from coopsim.distributed.algorithms.schedule import BUFFERS, Step, Xfer, chunks, make_schedule


def _ring_pass(ring, off, n, shift, reduce):
    """L-1 steps over ``ring`` on "out"[off:off+n]: at step k position i forwards part
    (i - k + shift) mod L of ``chunks(n, L)`` to position i+1, reducing or copying it."""
    size = len(ring)
    parts = chunks(n, size)
    steps = []
    for k in range(size - 1):
        xfers = []
        for i, rank in enumerate(ring):
            part_off, count = parts[(i - k + shift) % size]
            xfers.append(Xfer(rank, ring[(i + 1) % size], "out", off + part_off,
                              "out", off + part_off, count, reduce))
        steps.append(xfers)
    return steps


def reduce_scatter_inplace(ring, off, n):
    """Steps reducing "out"[off:off+n] over ``ring`` (a list of ranks); position i ends with
    part i of ``chunks(n, len(ring))``. At step k position i forwards part (i-k-1) mod L."""
    return _ring_pass(ring, off, n, -1, True)


def all_gather_inplace(ring, off, n):
    """Steps after which every position holds all parts; position i starts with part i."""
    return _ring_pass(ring, off, n, 0, False)


def all_reduce_inplace(ring, off, n):
    """Ring all-reduce of "out"[off:off+n] over ``ring``: 2(L-1) steps."""
    return reduce_scatter_inplace(ring, off, n) + all_gather_inplace(ring, off, n)


def all_reduce(p, n):
    """Ring all-reduce of n elements; every rank gets the same bits (the all-gather copies).

    The same steps as ``all_reduce_inplace(range(p), 0, n)``, built as columns (ADR-0027):
    at step k rank i moves part (i - k + shift) mod p, so a step's offsets and counts are the
    parts' rotated by k: a window ``[s, s + p)`` of the parts laid out twice. Every step is
    views of the same few arrays: O(p) memory for all 2(p-1) steps."""
    if p == 1:
        return make_schedule("all_reduce", "ring", p, [], n, n)
    base, extra = divmod(n, p)
    counts = np.tile(base + (np.arange(p) < extra), 2)
    offsets = np.cumsum(counts) - counts - np.repeat([0, n], p)
    ranks = np.arange(p)
    successors = (ranks + 1) % p
    out = np.full(p, BUFFERS.index("out"))
    steps = []
    for shift, reduce in ((-1, True), (0, False)):
        reduces = np.full(p, reduce)
        for k in range(p - 1):
            s = (shift - k) % p
            steps.append(Step.of_columns(ranks, successors, out, offsets[s:s + p], out,
                                         offsets[s:s + p], counts[s:s + p], reduces))
    return make_schedule("all_reduce", "ring", p, steps, n, n)


def reduce_scatter(p, count):
    """Ring reduce-scatter without writing "in": "out" is the running partial sum.

    At step k rank r sends its partial of chunk (r-k-1) mod p (from "in" at step 0) and receives
    the predecessor's partial of chunk (r-k-2) mod p, which it folds onto its own input chunk
    (local copy listed first, then the reduction): out = op(in_r, partial)."""
    steps = [[Xfer(0, 0, "in", 0, "out", 0, count, False)]] if p == 1 else []
    for k in range(p - 1):
        xfers = []
        for r in range(p):
            mine = ((r - k - 2) % p) * count
            xfers.append(Xfer(r, r, "in", mine, "out", 0, count, False))
            xfers.append(Xfer((r - 1) % p, r, "in" if k == 0 else "out",
                              mine if k == 0 else 0, "out", 0, count, True))
        steps.append(xfers)
    return make_schedule("reduce_scatter", "ring", p, steps, p * count, count)


def all_gather(p, count):
    """Ring all-gather: step 0 places and sends the own chunk (from "in"), then each rank
    forwards the chunk it received in the previous step."""
    steps = []
    for k in range(max(p - 1, 1)):
        xfers = []
        for r in range(p):
            if k == 0:
                xfers.append(Xfer(r, r, "in", 0, "out", r * count, count, False))
                if p > 1:
                    xfers.append(Xfer(r, (r + 1) % p, "in", 0, "out", r * count, count, False))
            else:
                at = ((r - k) % p) * count
                xfers.append(Xfer(r, (r + 1) % p, "out", at, "out", at, count, False))
        steps.append(xfers)
    return make_schedule("all_gather", "ring", p, steps, count, p * count)


def broadcast(p, n, root):
    """Chain broadcast: at step k rank root+k sends the whole buffer to root+k+1."""
    steps = [[Xfer((root + k) % p, (root + k + 1) % p, "out", 0, "out", 0, n, False)]
             for k in range(p - 1)]
    return make_schedule("broadcast", "ring", p, steps, n, n, root)
