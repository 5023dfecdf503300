"""Ops whose result's size depends on the values: ``nonzero``, ``masked_select``, ``unique``,
``bincount`` (docs/adr/0016-torch-surface.md).

Each is a host read (C8): the call waits (``Tensor._read``) for the writers of the tensor
whose values fix the result's size, as torch synchronises with the device there, then
enqueues the op that writes the result. ``masked_select`` waits for the mask only (its
values are gathered by the op, as ``t[mask]``); the others read their input at the call and
their op writes what was computed from it (stream order keeps those values current).
Semantics and messages are torch 2.13's (``aten/src/ATen/native/native_functions.yaml``,
``SummaryOps.cpp``, ``Unique.cpp``): indices and counts are int64; ``unique`` is always
sorted (torch's CUDA kernel sorts whatever ``sorted`` says) and keeps NaNs apart;
``bincount``'s weighted counts are float32 for float32 weights, else float64.
Costs: bytes read + written; no flops except ``unique`` (a sort: ``n * ceil(log2 n)``) and
``bincount`` (one an input element).
"""

from __future__ import annotations

import math

import numpy as np

from coopsim.tensor import ops
from coopsim.tensor.dtypes import bool_, float32, float64, int64
from coopsim.tensor.kernel import new, run

HOST_READS = ("nonzero", "masked_select", "unique", "bincount")


def _given(what, inputs, outputs, values, flops=0):
    """Enqueue the op writing ``values`` (computed from data read at the call) into ``outputs``."""
    run(what, inputs, outputs, lambda *arrays: values, flops)


def nonzero(t, *, as_tuple=False):
    """Indices of the non-zero elements, row-major: an ``(n, ndim)`` int64 tensor, or with
    ``as_tuple`` one 1-D tensor a dimension (a 0-d input counts as 1-D)."""
    values = np.asarray(t._read())
    if as_tuple:
        indices = np.nonzero(np.atleast_1d(values))
        outs = [new(t, i.shape, int64) for i in indices]
        _given("nonzero", [t], outs, tuple(indices) if len(outs) > 1 else indices[0])
        return tuple(outs)
    found = np.argwhere(values) if values.ndim else np.zeros((int(values != 0), 0), np.int64)
    out = new(t, found.shape, int64)
    _given("nonzero", [t], [out], found)
    return out


def masked_select(t, mask):
    """The elements of ``t`` where the bool ``mask`` (broadcast with ``t``) is True, 1-D."""
    if not isinstance(mask, type(t)) or mask._dtype is not bool_:
        raise RuntimeError("masked_select: expected BoolTensor for mask")
    ops.same_device(t, mask)
    shape = ops.broadcast_shapes(t._array.shape, mask._array.shape)
    chosen = np.broadcast_to(mask._read(), shape).copy()
    out = new(t, (int(chosen.sum()),), t._dtype)
    moved = out._array.size * t._dtype.itemsize
    run("masked_select", [t], [out], lambda a: np.broadcast_to(a, shape)[chosen], 0,
        cost_bytes=ops.nbytes(mask) + 2 * moved)
    return out


def unique(t, sorted=True, return_inverse=False, return_counts=False, dim=None):
    """The distinct values, ascending; with ``return_inverse`` each element's index into them
    (shaped as ``t``), with ``return_counts`` how often each occurs: a tensor, or a tuple of
    the ones asked for in that order. ``dim`` is not supported (None only)."""
    if dim is not None:
        raise NotImplementedError("coopsim's unique supports dim=None only (the distinct values of "
                                  "the flattened tensor)")
    flat = t._read().reshape(-1)
    values, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True, equal_nan=False)
    outs = [new(t, values.shape, t._dtype)]
    results = [values]
    if return_inverse:
        outs.append(new(t, t._array.shape, int64))
        results.append(inverse.reshape(t._array.shape))
    if return_counts:
        outs.append(new(t, counts.shape, int64))
        results.append(counts)
    n = flat.size
    _given("unique", [t], outs, tuple(results) if len(results) > 1 else values,
           n * max(1, math.ceil(math.log2(max(n, 1)))))
    return outs[0] if len(outs) == 1 else tuple(outs)


def bincount(t, weights=None, minlength=0):
    """Occurrences of each value in ``0 .. max(t)`` (at least ``minlength`` bins) of a 1-D
    non-negative integer tensor; with ``weights`` the sum of the weights of each value."""
    if t._dtype.is_floating_point or t._dtype is bool_:
        raise NotImplementedError(f"\"bincount_cuda\" not implemented for '{t._dtype._scalar_name}'")
    if minlength < 0:
        raise RuntimeError("minlength should be >= 0")
    if t._array.ndim != 1:
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    if weights is not None:
        ops.same_device(t, weights)
        if weights._array.ndim != 1 or weights._array.shape[0] != t._array.shape[0]:
            raise RuntimeError("weights should be 1-d and have the same length as input")
    values = t._read()
    if values.size and values.min() < 0:
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    bins = max(int(values.max()) + 1 if values.size else 0, int(minlength))
    index = values.copy()
    if weights is None:
        out = new(t, (bins,), int64)
        _given("bincount", [t], [out], np.bincount(index, minlength=bins), values.size)
        return out
    dtype = float32 if weights._dtype is float32 else float64
    out = new(t, (bins,), dtype)
    run("bincount", [t, weights], [out], lambda _, w: np.bincount(
        index, weights=w.astype(dtype._np), minlength=bins), values.size)
    return out


class SelectionMethods:
    """The Tensor methods of this module (host reads, see the module docstring)."""

    __slots__ = ()

    def nonzero(self, *, as_tuple=False):
        """Host read: waits for the values, then enqueues the op writing their indices."""
        return nonzero(self, as_tuple=as_tuple)

    def masked_select(self, mask):
        """Host read of ``mask`` only (its True count is the size); gathers on the device."""
        return masked_select(self, mask)

    def unique(self, sorted=True, return_inverse=False, return_counts=False, dim=None):
        """Host read: waits for the values; the distinct ones, sorted (see ``unique``)."""
        return unique(self, sorted, return_inverse, return_counts, dim)

    def bincount(self, weights=None, minlength=0):
        """Host read: waits for the values (the largest fixes the size), then counts."""
        return bincount(self, weights, minlength)
