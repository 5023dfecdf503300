"""Reductions, scans and selections (docs/adr/0016-torch-surface.md).

Semantics as ``torch`` documents them: ``min``/``max`` with ``dim`` and ``topk``/``sort``
return ``(values, indices)`` named tuples (``torch.return_types``), indices int64 and the
first occurrence on ties; ``std``/``var`` default to ``correction=1``; integer ``prod``,
``cumsum`` and ``cumprod`` are int64; ``all``/``any`` return bool. Costs: bytes read + written;
one flop an input element (``norm``, ``std``, ``var``, ``logsumexp``: three), ``sort``/``topk``: ``n * ceil(log2(n))``
comparisons an input row of ``n``.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from coopsim.tensor import ops
from coopsim.tensor.dtypes import bool_, int64
from coopsim.tensor.elementwise import binary
from coopsim.tensor.kernel import new, run
from coopsim.tensor.state import default_dtype

MaxResult = namedtuple("max", ["values", "indices"])  # torch.return_types.max
MinResult = namedtuple("min", ["values", "indices"])
TopkResult = namedtuple("topk", ["values", "indices"])
SortResult = namedtuple("sort", ["values", "indices"])
DEVICE_SIDE = ("min", "amax", "amin", "argmax", "argmin", "prod", "var", "std", "norm", "all",
               "any", "cumsum", "cumprod", "logsumexp", "sort", "argsort", "topk")


def _axes(t, dim, what):
    return ops.reduce_dims(dim, t._array.ndim, what)


def _np_axis(axes, ndim):
    return axes if ndim else None


def reduce_to(what, t, dim, keepdim, dtype, compute, flops_per=1):
    """A reduction over ``dim`` (None: all) into a fresh tensor of ``dtype``."""
    arr = t._array
    axes = _axes(t, dim, what)
    out = new(t, ops.reduced_shape(arr.shape, axes, keepdim), dtype)
    ax = _np_axis(axes, arr.ndim)
    run(what, [t], [out], lambda a: compute(a, ax), flops_per * arr.size)
    return out


def prod(t, dim=None, keepdim=False, dtype=None):
    out_dtype = dtype or (t._dtype if t._dtype.is_floating_point else int64)
    acc = out_dtype._opmath
    return reduce_to("prod", t, dim, keepdim, out_dtype,
                     lambda a, ax: np.prod(a, axis=ax, dtype=acc, keepdims=keepdim))


def var(t, dim=None, *, correction=None, unbiased=None, keepdim=False, std=False):
    what = "std" if std else "var"
    if not t._dtype.is_floating_point:
        raise RuntimeError(f"{what}(): input dtype should be either floating point or complex. "
                           f"Got {t._dtype._scalar_name} instead.")
    ddof = 1 if correction is None and unbiased is None else (
        correction if correction is not None else int(bool(unbiased)))

    def compute(a, ax):
        a = a.astype(np.float64)
        n = a.size if ax is None else math.prod(a.shape[i] for i in ax)
        mean = np.mean(a, axis=ax, keepdims=True)
        r = np.sum((a - mean) ** 2, axis=ax, keepdims=keepdim) / max(0, n - ddof)
        return np.sqrt(r) if std else r

    return reduce_to(what, t, dim, keepdim, t._dtype, compute, 3)


def norm(t, p="fro", dim=None, keepdim=False):
    """``torch.norm``: the 2-norm ("fro") by default; ``p`` a number or ``inf``."""
    if not t._dtype.is_floating_point:
        raise RuntimeError(f"linalg.vector_norm: Expected a floating point or complex tensor as "
                           f"input. Got {t._dtype._scalar_name}")
    order = 2 if p in ("fro", None) else p

    def compute(a, ax):
        a = np.abs(a.astype(np.float64))
        if order == float("inf"):
            return np.max(a, axis=ax, keepdims=keepdim)
        if order == 0:
            return np.sum(a != 0, axis=ax, keepdims=keepdim)
        return np.sum(a ** order, axis=ax, keepdims=keepdim) ** (1.0 / order)

    return reduce_to("norm", t, dim, keepdim, t._dtype, compute, 3)


def all_any(what, t, dim=None, keepdim=False):
    fn = np.all if what == "all" else np.any
    return reduce_to(what, t, dim, keepdim, bool_, lambda a, ax: fn(a != 0, axis=ax, keepdims=keepdim))


def extreme(what, t, dim=None, keepdim=False):
    """``max``/``min``: of all elements (a 0-d tensor), or with ``dim`` ``(values, indices)``
    (the first index of the extreme, int64); ``max(other)`` is ``maximum``."""
    if isinstance(dim, type(t)):
        return binary("maximum" if what == "max" else "minimum", t, dim)
    value_fn, index_fn = (np.max, np.argmax) if what == "max" else (np.min, np.argmin)
    arr = t._array
    if dim is None:
        if arr.size == 0:
            raise RuntimeError(f"{what}(): Expected reduction dim to be specified for input.numel() "
                               f"== 0. Specify the reduction dim with the 'dim' argument.")
        return reduce_to(what, t, None, False, t._dtype, lambda a, ax: value_fn(a))
    d = ops.wrap_dim(dim, arr.ndim, what)
    if arr.ndim and arr.shape[d] == 0:
        raise IndexError(f"{what}(): Expected reduction dim {d} to have non-zero size.")
    ax = d if arr.ndim else None
    shape = ops.reduced_shape(arr.shape, (d,) if arr.ndim else (), keepdim)
    values, indices = new(t, shape, t._dtype), new(t, shape, int64)
    run(f"{what}(dim={d})", [t], [values, indices], lambda a: (
        value_fn(a, axis=ax, keepdims=keepdim), index_fn(a, axis=ax, keepdims=keepdim)), arr.size)
    return (MaxResult if what == "max" else MinResult)(values, indices)


def amax(t, dim=(), keepdim=False, smallest=False):
    fn = np.min if smallest else np.max
    return reduce_to("amin" if smallest else "amax", t, dim, keepdim, t._dtype,
                     lambda a, ax: fn(a, axis=ax, keepdims=keepdim))


def arg(what, t, dim=None, keepdim=False):
    """``argmax``/``argmin``: of the flattened tensor when ``dim`` is None (int64)."""
    fn = np.argmax if what == "argmax" else np.argmin
    arr = t._array
    if dim is None:
        shape = (1,) * arr.ndim if keepdim else ()
        out = new(t, shape, int64)
        run(what, [t], [out], lambda a: np.reshape(fn(a), shape), arr.size)
        return out
    d = ops.wrap_dim(dim, arr.ndim, what)
    out = new(t, ops.reduced_shape(arr.shape, (d,) if arr.ndim else (), keepdim), int64)
    run(what, [t], [out], lambda a: fn(a, axis=d if a.ndim else None, keepdims=keepdim), arr.size)
    return out


def cumulative(what, t, dim, dtype=None):
    """``cumsum``/``cumprod`` along ``dim``: integer and bool tensors give int64 (unless ``dtype``)."""
    out_dtype = dtype or (t._dtype if t._dtype.is_floating_point else int64)
    d = ops.wrap_dim(dim, t._array.ndim, what)
    fn = np.cumsum if what == "cumsum" else np.cumprod
    out = new(t, t._array.shape, out_dtype)
    run(what, [t], [out], lambda a: fn(a.astype(out_dtype._opmath), axis=d if a.ndim else None)
        .reshape(a.shape), t._array.size)
    return out


def logsumexp(t, dim, keepdim=False):
    """``log(sum(exp(t)))`` over ``dim``, computed stably (shifted by the maximum); integer
    and bool tensors give the default dtype."""
    dtype = t._dtype if t._dtype.is_floating_point else default_dtype(t._storage.rt)
    compute = dtype._opmath

    def fn(a, ax):
        a = a.astype(compute)
        if a.size == 0:
            return np.log(np.sum(np.exp(a), axis=ax, keepdims=keepdim))
        top = np.max(a, axis=ax, keepdims=True)
        top = np.where(np.isinf(top), 0, top)
        r = np.log(np.sum(np.exp(a - top), axis=ax, keepdims=True)) + top
        return r if keepdim else np.squeeze(r, axis=ax)

    return reduce_to("logsumexp", t, dim, keepdim, dtype, fn, 3)


def _order(a, d, descending):
    """Stable order along ``d`` (descending keeps equal elements in index order, as torch's stable sort)."""
    if not descending:
        return np.argsort(a, axis=d, kind="stable")
    if a.dtype.kind == "b":
        key = ~a
    elif a.dtype.kind in "iu":
        key = np.iinfo(a.dtype).max - a.astype(np.int64) if a.dtype.kind == "u" else -a.astype(np.float64)
    else:
        key = -a
    return np.argsort(key, axis=d, kind="stable")


def sort(t, dim=-1, descending=False, stable=False):
    arr = t._array
    d = ops.wrap_dim(dim, arr.ndim, "sort")
    n = arr.shape[d] if arr.ndim else 1
    values, indices = new(t, arr.shape, t._dtype), new(t, arr.shape, int64)

    def compute(a):
        if a.ndim == 0:
            return a, np.zeros((), np.int64)
        idx = _order(a, d, descending)
        return np.take_along_axis(a, idx, d), idx

    run("sort", [t], [values, indices], compute, arr.size * max(1, math.ceil(math.log2(max(n, 1)))))
    return SortResult(values, indices)


def topk(t, k, dim=-1, largest=True, sorted=True):
    arr = t._array
    d = ops.wrap_dim(dim, arr.ndim, "topk")
    n = arr.shape[d] if arr.ndim else 1
    if not 0 <= k <= n:
        raise RuntimeError("selected index k out of range")
    shape = arr.shape[:d] + (k,) + arr.shape[d + 1:] if arr.ndim else ()
    values, indices = new(t, shape, t._dtype), new(t, shape, int64)

    def compute(a):
        if a.ndim == 0:
            return a, np.zeros((), np.int64)
        idx = np.take(_order(a, d, largest), np.arange(k), axis=d)
        return np.take_along_axis(a, idx, d), idx

    run("topk", [t], [values, indices], compute, arr.size * max(1, math.ceil(math.log2(max(n, 1)))))
    return TopkResult(values, indices)


class ReductionMethods:
    """The Tensor methods of this module."""

    __slots__ = ()

    def min(self, dim=None, keepdim=False):
        return extreme("min", self, dim, keepdim)

    def amax(self, dim=(), keepdim=False):
        return amax(self, dim, keepdim)

    def amin(self, dim=(), keepdim=False):
        return amax(self, dim, keepdim, smallest=True)

    def argmax(self, dim=None, keepdim=False):
        return arg("argmax", self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return arg("argmin", self, dim, keepdim)

    def prod(self, dim=None, keepdim=False, *, dtype=None):
        return prod(self, dim, keepdim, dtype)

    def var(self, dim=None, *, correction=None, unbiased=None, keepdim=False):
        return var(self, dim, correction=correction, unbiased=unbiased, keepdim=keepdim)

    def std(self, dim=None, *, correction=None, unbiased=None, keepdim=False):
        return var(self, dim, correction=correction, unbiased=unbiased, keepdim=keepdim, std=True)

    def norm(self, p="fro", dim=None, keepdim=False):
        return norm(self, p, dim, keepdim)

    def all(self, dim=None, keepdim=False):
        return all_any("all", self, dim, keepdim)

    def any(self, dim=None, keepdim=False):
        return all_any("any", self, dim, keepdim)

    def cumsum(self, dim, *, dtype=None):
        return cumulative("cumsum", self, dim, dtype)

    def cumprod(self, dim, *, dtype=None):
        return cumulative("cumprod", self, dim, dtype)

    def logsumexp(self, dim, keepdim=False):
        return logsumexp(self, dim, keepdim)

    def sort(self, dim=-1, descending=False, stable=False):
        return sort(self, dim, descending, stable)

    def argsort(self, dim=-1, descending=False, stable=False):
        return sort(self, dim, descending, stable).indices

    def topk(self, k, dim=-1, largest=True, sorted=True):
        return topk(self, k, dim, largest, sorted)
