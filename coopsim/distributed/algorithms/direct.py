"""Direct algorithms: every rank talks to every peer it needs, in one step (all-to-all: p-1
pairwise steps).

All-reduce and reduce-scatter fold contributions in rank order 0, 1, ..., p-1 at every
receiver, so all ranks of a one-shot all-reduce compute the same bits: the receiver first takes
rank 0's data (a copy), then reduces ranks 1..p-1 in turn, its own data included as a local
reduction whose snapshot was taken at the start of the step.
"""

from coopsim.distributed.algorithms.schedule import Xfer, make_schedule


def _fold(p, dst, buf, off, out_off, count):
    """Xfers giving ``dst`` op(...op(x_0, x_1)..., x_{p-1}) of every rank's ``buf``[off:]."""
    fold = [Xfer(s, dst, buf, off, "out", out_off, count, s > 0) for s in range(p)]
    already_there = dst == 0 and buf == "out"  # in place, rank 0's "out" already holds x_0
    return fold[1:] if already_there else fold


def all_reduce(p, n):
    """One-shot all-reduce: every rank sends its whole buffer to every other (one step)."""
    step = [x for dst in range(p) for x in _fold(p, dst, "out", 0, 0, n)]
    return make_schedule("all_reduce", "direct", p, [step], n, n)


def reduce(p, n, root):
    """Direct reduce: every rank sends its whole buffer to the root (one step), which folds
    them onto its own in rank order (only the root holds the result, so no other rank's
    summation order has to match)."""
    step = [Xfer(s, root, "out", 0, "out", 0, n, True) for s in range(p) if s != root]
    return make_schedule("reduce", "direct", p, [step], n, n, root)


def reduce_scatter(p, count):
    """Direct reduce-scatter: rank i sends its chunk j to rank j (one step)."""
    step = [x for dst in range(p) for x in _fold(p, dst, "in", dst * count, 0, count)]
    return make_schedule("reduce_scatter", "direct", p, [step], p * count, count)


def all_gather(p, count):
    """Direct all-gather: rank i sends its input to slot i of every rank (one step)."""
    step = [Xfer(s, d, "in", 0, "out", s * count, count, False)
            for d in range(p) for s in range(p)]
    return make_schedule("all_gather", "direct", p, [step], count, p * count)


def all_to_all(p, count):
    """Pairwise-exchange all-to-all: at step k rank i sends its chunk (i+k) mod p to rank
    (i+k) mod p, which stores it as chunk i. Step 0 is the local copy; p-1 steps use links."""
    steps = [[Xfer(i, (i + k) % p, "in", ((i + k) % p) * count, "out", i * count, count, False)
              for i in range(p)] for k in range(p)]
    return make_schedule("all_to_all", "direct", p, steps, p * count, p * count)


def gather(p, count, root):
    """Direct gather: every rank sends its input to slot i of the root's "out" (one step)."""
    step = [Xfer(s, root, "in", 0, "out", s * count, count, False) for s in range(p)]
    return make_schedule("gather", "direct", p, [step], count, p * count, root)


def scatter(p, count, root):
    """Direct scatter: the root sends chunk j of its input to rank j (one step)."""
    step = [Xfer(root, d, "in", d * count, "out", 0, count, False) for d in range(p)]
    return make_schedule("scatter", "direct", p, [step], p * count, count, root)


def broadcast(p, n, root):
    """Direct broadcast: the root sends its buffer to every other rank (one step)."""
    step = [Xfer(root, d, "out", 0, "out", 0, n, False) for d in range(p) if d != root]
    return make_schedule("broadcast", "direct", p, [step], n, n, root)
