"""The device ops the tensor-parallel layers need that the torch surface does not offer here:
``cat`` along the last dim, Megatron's fused bias-GeLU and its gradient, and the embedding
lookup and its weight gradient.

Each is one op on the device stream of its output, costed through
``coopsim.tensor.ops.launch`` (roofline: bytes read and written, estimated flops) like every
other device op, so it costs the same with or without data (timing-only tensors skip its
``fn``). Each ``fn`` reads its inputs when the op completes, in stream order.

GeLU is the tanh approximation of Megatron's fused ``bias_gelu``
(``megatron/core/fusions/fused_bias_gelu.py``): gelu(y) = y/2 * (1 + tanh(k * y * (1 + c y^2))),
k = 0.79788456 (sqrt(2/pi)), c = 0.044715.
"""

from __future__ import annotations

import math

import numpy as np

from coopsim.tensor.ops import bfloat16, launch, round_bfloat16

_K, _C = 0.79788456, 0.044715
GELU_FLOPS = 10  # per element, forward (an estimate: multiply-adds and one tanh)
GELU_GRAD_FLOPS = 16  # per element, backward


def _bytes(*tensors) -> int:
    return sum(t.numel() * t.dtype.itemsize for t in tensors)


def _enqueue(what: str, out, nbytes: int, flops: int, fn) -> None:
    device = out._storage.device
    launch(device, (what + " {} on cuda:{}", tuple(out.shape), device.index), nbytes, flops,
           out.dtype, fn, out)


def _store(out_arr: np.ndarray, values: np.ndarray, dtype) -> None:
    np.copyto(out_arr, values, casting="unsafe")
    if dtype is bfloat16:
        round_bfloat16(out_arr)


def cat_last(ctx, chunks: list):
    """``torch.cat(chunks, dim=-1)`` as one op: the chunks agree on every other dim."""
    first = chunks[0]
    shape = tuple(first.shape[:-1]) + (sum(c.shape[-1] for c in chunks),)
    out = ctx.empty(shape, dtype=first.dtype, device=first.device)
    arrays, out_arr = [c._array for c in chunks], out._array

    def fn():
        np.concatenate(arrays, axis=-1, out=out_arr)

    _enqueue("cat(dim=-1)", out, _bytes(*chunks) + _bytes(out), 0, fn)
    return out


def gelu(y: np.ndarray) -> np.ndarray:
    return y * 0.5 * (1.0 + np.tanh(_K * y * (1.0 + _C * y * y)))


def gelu_grad(y: np.ndarray) -> np.ndarray:
    t = np.tanh(_K * y * (1.0 + _C * y * y))
    return 0.5 * y * ((1.0 - t * t) * (_K + 3.0 * _K * _C * y * y)) + 0.5 * (1.0 + t)


def bias_gelu(ctx, h, bias):
    """gelu(h + bias) (``bias`` None: gelu(h)), computed in float32."""
    out = ctx.empty(tuple(h.shape), dtype=h.dtype, device=h.device)
    h_arr, out_arr = h._array, out._array
    b_arr = None if bias is None else bias._array

    def fn():
        y = h_arr.astype(np.float32)
        if b_arr is not None:
            y = y + b_arr.astype(np.float32)
        _store(out_arr, gelu(y), out.dtype)

    _enqueue("bias_gelu", out, _bytes(h, out) + (0 if bias is None else _bytes(bias)),
             GELU_FLOPS * out.numel(), fn)
    return out


def bias_gelu_backward(ctx, grad, h, bias):
    """d gelu(h + bias) / dh times ``grad``."""
    out = ctx.empty(tuple(h.shape), dtype=h.dtype, device=h.device)
    g_arr, h_arr, out_arr = grad._array, h._array, out._array
    b_arr = None if bias is None else bias._array

    def fn():
        y = h_arr.astype(np.float32)
        if b_arr is not None:
            y = y + b_arr.astype(np.float32)
        _store(out_arr, g_arr.astype(np.float32) * gelu_grad(y), out.dtype)

    _enqueue("bias_gelu_backward", out, _bytes(grad, h, out) + (0 if bias is None else _bytes(bias)),
             GELU_GRAD_FLOPS * out.numel(), fn)
    return out


def _local_ids(ids: np.ndarray, start: int, rows: int):
    local = ids.astype(np.int64) - start
    outside = (local < 0) | (local >= rows)
    local[outside] = 0
    return local, outside


def embedding(ctx, ids, weight, start: int):
    """Rows ``ids - start`` of ``weight``; ids outside ``[start, start + rows)`` give zeros
    (Megatron's masked lookup in ``VocabParallelEmbedding``)."""
    rows, width = weight.shape
    out = ctx.empty(tuple(ids.shape) + (width,), dtype=weight.dtype, device=weight.device)
    ids_arr, w_arr, out_arr = ids._array, weight._array, out._array

    def fn():
        local, outside = _local_ids(ids_arr, start, rows)
        values = w_arr[local]
        values[outside] = 0
        out_arr[...] = values

    _enqueue("embedding", out, _bytes(ids) + 2 * _bytes(out), 0, fn)
    return out


def embedding_weight_grad(ctx, grad, ids, weight, start: int):
    """The gradient of ``embedding`` for ``weight``: the rows of ``grad`` summed into the
    rows their ids name (ids outside this shard add nothing)."""
    out = ctx.empty(tuple(weight.shape), dtype=weight.dtype, device=weight.device)
    g_arr, ids_arr, out_arr = grad._array, ids._array, out._array
    rows, width = weight.shape

    def fn():
        local, outside = _local_ids(ids_arr, start, rows)
        acc = np.zeros((rows, width), np.float32)
        np.add.at(acc, local[~outside], g_arr.reshape(local.shape + (width,))[~outside].astype(np.float32))
        _store(out_arr, acc, out.dtype)

    _enqueue("embedding_backward", out, _bytes(ids, grad, out), math.prod(grad.shape), fn)
    return out
