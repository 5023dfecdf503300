"""Advanced indexing and the index ops (docs/adr/0016-torch-surface.md).

torch semantics (numpy's advanced indexing, which torch follows for ``t[...]``):
- an integer tensor (or list) index gathers; its values are read when the op runs, so
  indexing with one never waits. An index out of range is a device-side error: the result
  reads as zeros and its next host read raises (as a CUDA assert surfaces at the next sync).
- a bool tensor (mask) index: the result's size is the number of True elements, which
  only the mask's values tell; reading ``t[mask]`` therefore waits for the mask (a host read
  of the mask, as torch synchronises there). Writing ``t[mask] = number`` does not wait.
Costs: bytes of the indices + twice the bytes of the elements moved (read and written);
``where``/``masked_fill`` read all inputs and write the output; no flops.
"""

from __future__ import annotations

import numbers

import numpy as np

from coopsim.tensor import ops
from coopsim.tensor.dtypes import bool_, int32, int64, result_type, scalar
from coopsim.tensor.kernel import device_error, new, run
from coopsim.tensor.state import default_dtype

DEVICE_SIDE = ("index_select", "gather", "scatter_", "scatter_add_", "scatter_add", "index_add_",
               "index_add", "masked_fill", "masked_fill_", "where")


def is_basic(key: tuple) -> bool:
    return all(k is None or k is Ellipsis or isinstance(k, slice)
               or (isinstance(k, numbers.Integral) and not isinstance(k, bool)) for k in key)


def _plan(t, key: tuple, read_masks: bool):
    """``(dummy key, tensors, rebuild)``: a key of host arrays standing for the index tensors
    (masks read now if ``read_masks``), the index tensors left for the op, and
    ``rebuild(arrays)`` making the real key from their values."""
    Tensor = type(t)
    dummy, deferred, slots = [], [], []
    for k in key:
        if isinstance(k, slice) and k.step is not None and k.step <= 0:
            raise ValueError("step must be greater than zero")
        if isinstance(k, Tensor) and k._storage.device.index is None:
            k = k._read().copy()  # a CPU index: host data, ready now
        if isinstance(k, Tensor):
            ops.same_device(t, k)
            if k._dtype is bool_ and read_masks:
                dummy.append(k._read().copy())
            elif k._dtype is bool_ or not k._dtype.is_floating_point:
                slots.append(len(dummy))
                deferred.append(k)
                dummy.append(np.ones(k._array.shape, np.bool_) if k._dtype is bool_
                             else np.zeros(k._array.shape, np.intp))
            else:
                raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
        elif isinstance(k, (list, tuple, np.ndarray)):
            a = np.asarray(k)
            if a.dtype.kind not in "iub":
                raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
            dummy.append(a)
        else:
            dummy.append(k)

    def rebuild(arrays):
        real = list(dummy)
        for slot, a in zip(slots, arrays):
            real[slot] = a
        return tuple(real)

    return tuple(dummy), deferred, rebuild


def _shape(t, key: tuple) -> tuple:
    """The result shape of ``t[key]`` (numpy checks host-known indices here)."""
    return np.broadcast_to(np.zeros((), np.int8), t._array.shape)[key].shape


def getitem(t, key: tuple):
    """``t[key]`` with an advanced index: a gather into a new tensor."""
    dummy, deferred, rebuild = _plan(t, key, read_masks=True)
    shape = _shape(t, dummy)
    out = new(t, shape, t._dtype)
    moved = out._array.size * t._dtype.itemsize
    run("index", [t] + deferred, [out], lambda a, *ix: a[rebuild(ix)], 0,
        cost_bytes=sum(ops.nbytes(k) for k in deferred) + 2 * moved)
    return out


def setitem(t, key: tuple, value) -> None:
    """``t[key] = value`` with an advanced index: a scatter into ``t``, in place."""
    Tensor = type(t)
    is_tensor = isinstance(value, Tensor)
    dummy, deferred, rebuild = _plan(t, key, read_masks=is_tensor)
    shape = _shape(t, dummy)
    if is_tensor:
        ops.same_device(t, value)
        try:
            np.broadcast_shapes(value._array.shape, shape)
        except ValueError:
            raise RuntimeError(f"shape mismatch: value tensor of shape {list(value._array.shape)} cannot "
                               f"be broadcast to indexing result of shape {list(shape)}") from None
        v = value._array
    else:
        v = ops.host_value(scalar(value, "__setitem__"), t._dtype, "__setitem__")
    arr, ix_arrays, storage = t._array, [k._array for k in deferred], t._storage
    rounds = t._dtype is ops.bfloat16 and is_tensor and value._dtype is not ops.bfloat16

    def fn():
        with np.errstate(all="ignore"):
            try:
                arr[rebuild(ix_arrays)] = v
            except IndexError as e:
                device_error("index_put_", e, [arr], [storage])
                return
            if rounds:
                ops.round_bfloat16(arr)

    moved = int(np.prod(shape, dtype=np.int64)) * t._dtype.itemsize
    device = storage.device
    ops.launch(device, ("index_put_ {} on {}", shape, device.index),
               sum(ops.nbytes(k) for k in deferred) + 2 * moved, 0, t._dtype, fn, t)


def index_select(t, dim, index):
    d = ops.wrap_dim(dim, t._array.ndim, "index_select")
    if index._array.ndim > 1 or index._dtype.is_floating_point or index._dtype is bool_:
        raise IndexError("index_select(): Index is supposed to be a vector of long or int")
    shape = list(t._array.shape)
    if shape:
        shape[d] = index._array.size
    out = new(t, shape, t._dtype)
    moved = out._array.size * t._dtype.itemsize
    run("index_select", [t, index], [out], lambda a, i: np.take(a, _checked(i, a.shape[d] if a.ndim else 1),
                                                                axis=d if a.ndim else None).reshape(out._array.shape),
        0, cost_bytes=ops.nbytes(index) + 2 * moved)
    return out


def _checked(i, n):
    """``i`` as indices into a dimension of ``n``; torch refuses out-of-range (numpy would wrap)."""
    if i.size and (i.min() < -n or i.max() >= n):
        raise IndexError(f"index out of range in self (size {n})")
    return i


def gather(t, dim, index):
    d = ops.wrap_dim(dim, t._array.ndim, "gather")
    if index._dtype is not int64:
        raise RuntimeError("gather(): Expected dtype int64 for index")
    if index._array.ndim != t._array.ndim:
        raise RuntimeError("Index tensor must have the same number of dimensions as input tensor")
    out = new(t, index._array.shape, t._dtype)
    moved = out._array.size * t._dtype.itemsize
    run("gather", [t, index], [out],
        lambda a, i: np.take_along_axis(a, _checked(i, a.shape[d]), d) if a.ndim else a, 0,
        cost_bytes=ops.nbytes(index) + 2 * moved)
    return out


def scatter_(t, dim, index, src=None, value=None, reduce=None):
    """``t.scatter_(dim, index, src)`` / ``(dim, index, value=...)``; ``reduce`` "add" or "multiply"."""
    d = ops.wrap_dim(dim, t._array.ndim, "scatter_")
    if index._dtype not in (int64, int32):
        raise RuntimeError("scatter(): Expected dtype int32/int64 for index")
    Tensor = type(t)
    arr, idx, storage = t._array, index._array, t._storage
    src_arr = src._array if isinstance(src, Tensor) else None
    const = ops.host_value(scalar(src if src is not None else value, "scatter_"), t._dtype, "scatter_") \
        if src_arr is None else None

    def fn():
        with np.errstate(all="ignore"):
            try:
                i = _checked(idx, arr.shape[d])
                values = const if src_arr is None else src_arr[tuple(slice(0, n) for n in idx.shape)]
                values = np.broadcast_to(values, idx.shape)
                if reduce is None:
                    np.put_along_axis(arr, i, values, d)
                else:
                    ufunc = {"add": np.add, "multiply": np.multiply}[reduce]
                    target = [np.broadcast_to(np.arange(n).reshape([-1 if a == k else 1 for k in range(idx.ndim)]),
                                              idx.shape) for a, n in enumerate(idx.shape)]
                    target[d] = i
                    ufunc.at(arr, tuple(target), values)
                if t._dtype is ops.bfloat16:
                    ops.round_bfloat16(arr)
            except IndexError as e:
                device_error("scatter_", e, [arr], [storage])

    device = storage.device
    ops.launch(device, ("scatter_ {} on {}", idx.shape, device.index),
               ops.nbytes(index) + 2 * idx.size * t._dtype.itemsize, 0, t._dtype, fn, t)
    return t


def scatter_add_(t, dim, index, src):
    """``t.scatter_add_(dim, index, src)``: ``t[index[i][j]][j] += src[i][j]`` (for ``dim=0``),
    repeated indices accumulating; torch's checks (``ScatterGatherChecks.h``)."""
    if not isinstance(src, type(t)):
        raise TypeError(f"scatter_add_(): argument 'src' (position 3) must be Tensor, not {type(src).__name__}")
    d = ops.wrap_dim(dim, t._array.ndim, "scatter_add_")
    if index._dtype not in (int64, int32):
        raise RuntimeError("scatter(): Expected dtype int32/int64 for index")
    if t._dtype is not src._dtype:
        raise RuntimeError("scatter(): Expected self.dtype to be equal to src.dtype")
    if index._array.ndim != t._array.ndim:
        raise RuntimeError("Index tensor must have the same number of dimensions as self tensor")
    if index._array.ndim != src._array.ndim:
        raise RuntimeError("Index tensor must have the same number of dimensions as src tensor")
    ix, me, sr = index._array.shape, t._array.shape, src._array.shape
    if any(n > s for n, s in zip(ix, sr)) or any(n > m for k, (n, m) in enumerate(zip(ix, me)) if k != d):
        raise RuntimeError(f"Expected index {list(ix)} to be no larger than self {list(me)} apart from "
                           f"dimension {d} and to be no larger size than src {list(sr)}")
    return scatter_(t, d, index, src, None, "add")


def index_add_(t, dim, index, source, alpha=1):
    """``t.index_add_(dim, index, source, alpha=)``: adds ``alpha * source`` into the slices
    ``index`` of ``t`` along ``dim`` (repeated indices accumulate)."""
    d = ops.wrap_dim(dim, t._array.ndim, "index_add_")
    if index._dtype not in (int64, int32):
        raise RuntimeError(f"index_add_(): Expected dtype int32/int64 for index but got: "
                           f"{index._dtype._scalar_name}")
    if index._array.ndim > 1:
        raise IndexError(f"index_add_(): Index is supposed to be a vector, but got dim: "
                         f"{index._array.ndim} with type: {index._dtype._scalar_name} and size: "
                         f"{list(index._array.shape)}")
    if t._dtype is not source._dtype:
        raise RuntimeError(f"index_add_(): self ({t._dtype._scalar_name}) and source "
                           f"({source._dtype._scalar_name}) must have the same scalar type")
    me, sr = t._array.shape, source._array.shape
    if len(me) != len(sr) or any(m != s for k, (m, s) in enumerate(zip(me, sr)) if k != d):
        raise RuntimeError(f"source tensor shape must match self tensor shape, excluding the specified "
                           f"dimension. Got self.shape = {list(me)} source.shape = {list(sr)}")
    if me and index._array.size != sr[d]:
        raise RuntimeError(f"index_add_(): Number of indices ({index._array.size}) should be equal to "
                           f"source.size(dim): ({sr[d]}), for dim: {d}")
    scale = ops.checked_scalar(scalar(alpha, "index_add_"), t._dtype._opmath, "index_add_")
    arr, idx, src_arr, storage = t._array, index._array, source._array, t._storage

    def fn():
        with np.errstate(all="ignore"):
            try:
                i = _checked(idx.reshape(-1), arr.shape[d] if arr.ndim else 1)
                added = src_arr.astype(t._dtype._opmath) * scale
                target = np.moveaxis(arr, d, 0) if arr.ndim else arr.reshape(1)
                np.add.at(target, i, np.moveaxis(added, d, 0) if added.ndim else added.reshape(1))
                if t._dtype is ops.bfloat16:
                    ops.round_bfloat16(arr)
            except IndexError as e:
                device_error("index_add_", e, [arr], [storage])

    device = storage.device
    ops.launch(device, ("index_add_ {} on {}", sr, device.index),
               ops.nbytes(index) + 2 * ops.nbytes(source), source._array.size, t._dtype, fn, t)
    return t


def where(condition, input, other):
    """``torch.where(condition, input, other)``: inputs are tensors or numbers; promoted."""
    Tensor = type(condition)
    operands = [(x._dtype, x._array.ndim) if isinstance(x, Tensor) else scalar(x, "where")
                for x in (input, other)]
    dtype = result_type(operands, default_dtype(condition._storage.rt))
    shape = condition._array.shape
    tensors = [condition]
    for x in (input, other):
        if isinstance(x, Tensor):
            shape = ops.broadcast_shapes(shape, x._array.shape)
            tensors.append(x)
    x_c = None if isinstance(input, Tensor) else input
    y_c = None if isinstance(other, Tensor) else other
    out = new(condition, shape, dtype)

    def compute(c, *xs):
        it = iter(xs)
        x = next(it) if x_c is None else x_c
        y = next(it) if y_c is None else y_c
        return np.where(c.astype(bool), x, y)

    run("where", tensors, [out], compute, 0)
    return out


def masked_fill(t, mask, value, out=None):
    """``t.masked_fill(mask, value)``: value a number or a 0-d tensor; mask bool, broadcast to t."""
    if mask._dtype is not bool_:
        raise RuntimeError(f"masked_fill_ only supports boolean masks, but got mask with dtype "
                           f"{mask._dtype._scalar_name}")
    shape = ops.broadcast_shapes(t._array.shape, mask._array.shape)
    if out is not None and shape != t._array.shape:
        raise RuntimeError(f"masked_fill_: mask of shape {list(mask._array.shape)} cannot be "
                           f"broadcast to the tensor's shape {list(t._array.shape)}")
    Tensor = type(t)
    out = new(t, shape, t._dtype) if out is None else out
    tensors = [t, mask]
    if isinstance(value, Tensor):
        if value._array.ndim:
            raise RuntimeError(f"masked_fill_ only supports a 0-dimensional value tensor, but got "
                               f"tensor with {value._array.ndim} dimension(s).")
        tensors.append(value)
        run("masked_fill", tensors, [out], lambda a, m, v: np.where(m, v, a), 0)
    else:
        v = ops.host_value(scalar(value, "masked_fill"), t._dtype, "masked_fill")
        run("masked_fill", tensors, [out], lambda a, m: np.where(m, v, a), 0)
    return out


class IndexingMethods:
    """The Tensor methods of this module."""

    __slots__ = ()

    def index_select(self, dim, index):
        return index_select(self, dim, index)

    def gather(self, dim, index):
        return gather(self, dim, index)

    def scatter_(self, dim, index, src=None, *, value=None, reduce=None):
        return scatter_(self, dim, index, src, value, reduce)

    def scatter_add_(self, dim, index, src):
        return scatter_add_(self, dim, index, src)

    def scatter_add(self, dim, index, src):
        return scatter_add_(self.clone(), dim, index, src)

    def index_add_(self, dim, index, source, *, alpha=1):
        return index_add_(self, dim, index, source, alpha)

    def index_add(self, dim, index, source, *, alpha=1):
        return index_add_(self.clone(), dim, index, source, alpha)

    def masked_fill(self, mask, value):
        return masked_fill(self, mask, value)

    def masked_fill_(self, mask, value):
        return masked_fill(self, mask, value, out=self)

    def where(self, condition, other):
        return where(condition, self, other)
