"""Collectives compiled into steps of transfers, and the pure-data reference executor (ADR-0008).

A ``Schedule`` is what an algorithm (ring, halving-doubling, trees, direct, hierarchical) makes
of one collective on ``p`` group-local ranks ``0..p-1``. It holds no data and no time: only
which slice of which buffer moves where, in which step.

Buffers. Every rank has three 1-D arrays, named by ``Xfer.src_buf`` / ``Xfer.dst_buf``:
``"in"`` (``in_count`` elements), ``"out"`` (``out_count``) and ``"tmp"`` (``tmp_count``, a
scratch buffer the executor allocates; only algorithms that must not write the user's input
use it). Offsets and counts are in elements.

- In-place collectives (all_reduce, broadcast, reduce): the executor passes one array as both
  "in" and "out", holding the rank's input at the start; schedules read and write only "out".
- For gather only the root's "out" exists; for scatter only the root's "in" is read.
- No schedule ever writes "in" (checked by ``Schedule``).

Semantics (normative; the timed executor follows them too):

- Steps are per-rank synchronous: rank r starts step k when it has finished step k-1, that is
  when all its sends of step k-1 are delivered and all its receives of step k-1 are applied.
- A transfer of step k takes a SNAPSHOT of its source slice when its src starts step k. It is
  APPLIED at dst once it has arrived and dst has started step k, so the receives of a step never
  overwrite data that the step still has to send.
- Applying: ``reduce=False``: ``dst[dst_off:dst_off+count] = payload``; ``reduce=True``:
  ``dst[...] = op(dst[...], payload)``. Within a step, the applications at one rank happen in
  the order the transfers are listed, so every summation order is fixed (C9).
- ``src == dst`` is a local copy or reduction on the device: it uses no link. Its snapshot is
  taken at the start of the step too, which lets a rank fold its own data in at a chosen place
  of the summation order.

Invariants every ``Schedule`` keeps (checked when it is built): ranks in ``0..p-1``, slices
inside their buffers, "in" never written, and at most one transfer per ordered pair of distinct
ranks in a step (a pair's data for one step travels as one message, which is what the timing
models charge for).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BUFFERS = ("in", "out", "tmp")


@dataclass(frozen=True, slots=True)
class Xfer:
    """Move ``count`` elements from ``src``'s ``src_buf[src_off:]`` to ``dst``'s
    ``dst_buf[dst_off:]``, combining with ``op`` if ``reduce``."""

    src: int
    dst: int
    src_buf: str
    src_off: int
    dst_buf: str
    dst_off: int
    count: int
    reduce: bool


@dataclass(frozen=True, slots=True)
class Step:
    """Transfers that run concurrently; their order fixes the order of applications per rank."""

    xfers: tuple[Xfer, ...]


@dataclass(frozen=True, slots=True)
class Schedule:
    """One collective on ``p`` ranks as ``steps``; ``root`` is None for unrooted collectives.

    ``in_count``/``out_count``/``tmp_count`` are the element counts of each rank's buffers
    (for gather ``out_count`` is the root's; for scatter ``in_count`` is the root's)."""

    collective: str
    algorithm: str
    p: int
    steps: tuple[Step, ...]
    in_count: int
    out_count: int
    root: int | None
    tmp_count: int = 0

    def __post_init__(self) -> None:
        _check(self)


def _check(s: Schedule) -> None:
    if s.p < 1:
        raise ValueError(f"a schedule needs p >= 1 ranks, got {s.p}")
    sizes = {"in": s.in_count, "out": s.out_count, "tmp": s.tmp_count}
    writable = {"out": s.out_count, "tmp": s.tmp_count}
    for k, step in enumerate(s.steps):
        pairs = set()
        for x in step.xfers:
            problem = None
            if not (0 <= x.src < s.p and 0 <= x.dst < s.p):
                problem = "rank out of range"
            elif x.src_buf not in sizes or x.dst_buf not in writable:
                problem = "bad buffer (read in/out/tmp, write out/tmp)"
            elif x.count < 0 or x.src_off < 0 or x.dst_off < 0:
                problem = "negative size or offset"
            elif (x.src_off + x.count > sizes[x.src_buf]
                  or x.dst_off + x.count > writable[x.dst_buf]):
                problem = "slice outside its buffer"
            elif x.src != x.dst:
                if (x.src, x.dst) in pairs:
                    problem = "two transfers between one pair"
                pairs.add((x.src, x.dst))
            if problem:
                raise ValueError(f"{problem} in {s.collective}/{s.algorithm} p={s.p} "
                                 f"step {k}: {x}")


def make_schedule(collective, algorithm, p, steps, in_count, out_count, root=None, tmp_count=0):
    """A ``Schedule`` from lists of transfers; empty steps are dropped."""
    kept = tuple(Step(tuple(xfers)) for xfers in steps if xfers)
    return Schedule(collective, algorithm, p, kept, in_count, out_count, root, tmp_count)


def parallel(*step_lists):
    """Run several lists of steps side by side: step k is the union of their steps k."""
    merged = []
    for steps in step_lists:
        for k, xfers in enumerate(steps):
            if k == len(merged):
                merged.append([])
            merged[k].extend(xfers)
    return merged


def chunks(n: int, p: int) -> list[tuple[int, int]]:
    """Split ``n`` elements into ``p`` contiguous ``(offset, count)`` chunks, in order, whose
    counts differ by at most one: the first ``n % p`` chunks are one element longer."""
    if p < 1 or n < 0:
        raise ValueError(f"chunks needs n >= 0 and p >= 1, got n={n}, p={p}")
    base, extra = divmod(n, p)
    out, off = [], 0
    for i in range(p):
        count = base + (i < extra)
        out.append((off, count))
        off += count
    return out


def run_schedule(schedule: Schedule, in_bufs, out_bufs, op) -> None:
    """Apply ``schedule`` to the ranks' arrays, exactly by the semantics above, with no time.

    Each step first snapshots the source slices of all its transfers, then applies them in the
    listed order. ``op`` is a binary ufunc-like (``np.add``, ``np.minimum``, ...). "tmp" buffers
    are allocated here (zeros of the rank's "in" dtype)."""
    p = schedule.p
    if len(in_bufs) != p or len(out_bufs) != p:
        raise ValueError(f"{schedule.collective} on {p} ranks needs {p} in and out buffers, "
                         f"got {len(in_bufs)} and {len(out_bufs)}")
    bufs = [{"in": in_bufs[r], "out": out_bufs[r],
             "tmp": np.zeros(schedule.tmp_count, dtype=in_bufs[r].dtype)} for r in range(p)]
    for step in schedule.steps:
        for x in step.xfers:
            for rank, name, end in ((x.src, x.src_buf, x.src_off + x.count),
                                    (x.dst, x.dst_buf, x.dst_off + x.count)):
                if len(bufs[rank][name]) < end:
                    raise ValueError(f"rank {rank}'s {name!r} buffer has "
                                     f"{len(bufs[rank][name])} elements, {x} needs {end}")
    for step in schedule.steps:
        payloads = [bufs[x.src][x.src_buf][x.src_off:x.src_off + x.count].copy()
                    for x in step.xfers]
        for x, payload in zip(step.xfers, payloads):
            target = bufs[x.dst][x.dst_buf]
            lo, hi = x.dst_off, x.dst_off + x.count
            target[lo:hi] = op(target[lo:hi], payload) if x.reduce else payload
