"""All-reduce of large buffers in cache-sized blocks (ADR-0027, ADR-0034).

Reducing p buffers of n elements one whole buffer at a time streams a temporary of n elements
through memory p times and then copies it p times. Here each block of ``BLOCK_BYTES`` is
reduced in rank order into rank 0's output and copied to the other outputs while it is still in
cache, so memory sees each input read once and each output written once.

Invariant: the result is bit for bit the one of the whole-buffer code (``op`` and ``post`` are
elementwise, and every element is reduced in the same rank order), and ``fusable`` admits only
buffers where writing block k of an output cannot change an input that a later block reads.

``block_moves`` does the same for the transfer model's moves (ADR-0034): a run of a schedule's
moves regrouped block by block, each block's moves in their listed order, so that a block of
every rank's buffer is reduced and copied while it is in cache, in the schedule's own order.
"""

from __future__ import annotations

import numpy as np

BLOCK_BYTES = 1 << 17  # bytes per buffer and block: the fastest of 32 KiB..1 MiB measured (ADR-0034)


def fusable(ins, outs) -> bool:
    """True if ``all_reduce_blocks`` may run on these buffers: more than one block, all 1-D and
    contiguous, and no two of them overlap, except a rank's output being its own input."""
    if not ins or ins[0].nbytes <= BLOCK_BYTES:
        return False
    arrays = []
    for x, y in zip(ins, outs):
        arrays.extend((x,) if _same(x, y) else (x, y))
    if any(a.ndim != 1 or not a.flags.c_contiguous for a in arrays):
        return False
    owners = [a if a.base is None else a.base for a in arrays]  # numpy collapses chains of views
    if (all(isinstance(o, np.ndarray) and o.flags.owndata for o in owners)
            and len({id(o) for o in owners}) == len(arrays)):
        return True  # arrays in distinct allocations (each numpy's own) never overlap
    spans = sorted((a.ctypes.data, a.ctypes.data + a.nbytes) for a in arrays)
    return all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))


def apart(ins, outs) -> bool:
    """True if each rank's output is its input or does not overlap it (None: no buffer). What
    ``block_moves`` needs besides what every schedule assumes: ranks' buffers do not overlap."""
    return all(x is y or x is None or y is None or not np.may_share_memory(x, y) or _same(x, y)
               for x, y in zip(ins, outs))


def _same(x, y) -> bool:
    return x is y or (x.ctypes.data == y.ctypes.data and x.shape == y.shape
                      and x.strides == y.strides and x.dtype == y.dtype)


def all_reduce_blocks(op, ins, outs, post=None) -> None:
    """Every ``outs[r] = post(op(...op(op(ins[0], ins[1]), ins[2])..., ins[p-1]))``, computed
    block by block in rank order into ``outs[0]``; only for buffers ``fusable`` admits."""
    n = ins[0].size
    block = max(1, BLOCK_BYTES // ins[0].itemsize)
    first, rest = outs[0], outs[1:]
    for lo in range(0, n, block):
        hi = lo + block
        acc = first[lo:hi]
        if len(ins) == 1:
            acc[...] = ins[0][lo:hi]
        else:
            op(ins[0][lo:hi], ins[1][lo:hi], out=acc)
            for x in ins[2:]:
                op(acc, x[lo:hi], out=acc)
        if post is not None:
            acc[...] = post(acc)
        for out in rest:
            out[lo:hi] = acc


def block_moves(items, block: int):
    """``items`` (``(src, dst, src lo, src hi, dst lo, dst hi, reduce)``, ``src``/``dst``
    naming a buffer, in listed order) as the same element moves cut at every ``block``-th
    element of their interval and ordered block by block, stably; None if that could change a
    result, i.e. unless every move reads the element interval it writes and any two moves'
    intervals are equal or disjoint. Then two moves in different blocks touch different
    elements of every buffer (given buffers that do not overlap: ``apart``), so only the
    order within a block matters, and that is the listed one."""
    if any(m[2:4] != m[4:6] for m in items):
        return None  # a move shifts its elements
    spans = sorted({m[2:4] for m in items})
    if any(hi > next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:])):
        return None  # sorted by start, two intervals that overlap include two neighbours
    pieces = []
    for n, (src, dst, lo, hi, _, _, reduce) in enumerate(items):
        for start in range(lo, hi, block):
            end = min(start + block, hi)
            pieces.append((start, n, (src, dst, start, end, start, end, reduce)))
    pieces.sort()
    return [piece for _, _, piece in pieces]
