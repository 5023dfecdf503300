"""Example kernels in the tile language, with host wrappers: vector add and a tiled GEMM."""

from __future__ import annotations

import numpy as np


def vector_add_kernel(tl, x, y, out, n: int, block: int):
    """out[i] = x[i] + y[i], one ``block`` of elements per program."""
    offsets = tl.program_id(0) * block + tl.arange(0, block)
    mask = offsets < n
    tl.store(out, offsets, tl.load(x, offsets, mask) + tl.load(y, offsets, mask), mask)


def gemm_kernel(tl, a, b, c, m: int, n: int, k: int, block_m: int, block_n: int, block_k: int):
    """c = a @ b for row-major (m, k) and (k, n); one (block_m, block_n) tile of c per program."""
    rows = tl.program_id(0) * block_m + tl.arange(0, block_m)
    cols = tl.program_id(1) * block_n + tl.arange(0, block_n)
    acc = tl.zeros((block_m, block_n), np.float32 if a.dtype.itemsize <= 4 else np.float64)
    for k0 in range(0, k, block_k):
        ks = k0 + tl.arange(0, block_k)
        a_tile = tl.load(a, rows[:, None] * k + ks[None, :], (rows[:, None] < m) & (ks[None, :] < k))
        b_tile = tl.load(b, ks[:, None] * n + cols[None, :], (ks[:, None] < k) & (cols[None, :] < n))
        acc += tl.dot(a_tile, b_tile)
    tl.store(c, rows[:, None] * n + cols[None, :], acc, (rows[:, None] < m) & (cols[None, :] < n))


def vector_add(ctx, x, y, block: int = 1024):
    """Launch ``vector_add_kernel`` over x and y (same shape and dtype); returns the result."""
    if x.shape != y.shape or x.dtype != y.dtype:
        raise ValueError(f"vector_add: x and y must match, got {x.shape}/{x.dtype} and {y.shape}/{y.dtype}")
    out = ctx.empty(x.shape, dtype=x.dtype)
    n = x.numel()
    ctx.launch(vector_add_kernel, (n + block - 1) // block, x, y, out, n, block)
    return out


def gemm(ctx, a, b, block_m: int = 64, block_n: int = 64, block_k: int = 32):
    """Launch ``gemm_kernel``: a (m, k) @ b (k, n) -> (m, n), all contiguous, one dtype."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0] or a.dtype != b.dtype:
        raise ValueError(f"gemm: expected (m, k) and (k, n) of one dtype, got {a.shape}/{a.dtype} and {b.shape}/{b.dtype}")
    m, k = a.shape
    n = b.shape[1]
    c = ctx.empty((m, n), dtype=a.dtype)
    grid = ((m + block_m - 1) // block_m, (n + block_n - 1) // block_n)
    ctx.launch(gemm_kernel, grid, a, b, c, m, n, k, block_m, block_n, block_k)
    return c
