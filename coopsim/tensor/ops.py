"""Tensor ops: scalar and shape rules, storage, ``launch``, and the core ops (reductions,
matmul, copy, fill); binary elementwise ops are in ``coopsim.tensor.elementwise``, dtypes
and promotion in ``coopsim.tensor.dtypes``, the other families in their own modules.

``coopsim.tensor`` holds the ``Tensor`` surface and the host-read barrier; this module holds
what its device ops do (docs/adr/0005-device-cost-model.md). Each op validates everything on
the host (errors mirror PyTorch's messages), allocates its result, and enqueues on the
device's stream a ``fn`` that computes the numbers when the op completes, never before.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from coopsim.tensor.host import place
from coopsim.tensor.storage import Storage, TimingOnlyStorage, allocate, timing_only  # noqa: F401
from coopsim.tensor.streams import route
from coopsim.tensor.dtypes import (  # noqa: F401  (re-exported: ops is where callers look)
    DTYPES,
    TYPE_META_NAMES,
    DType,
    bfloat16,
    bool_,
    can_cast,
    dtype_arg,
    dtype_named,
    dtype_of_numpy,
    float16,
    float32,
    float64,
    int8,
    int16,
    int32,
    int64,
    promote,
    result_type,
    scalar,
    uint8,
)

# -- Python scalars ----------------------------------------------------------------------------

def checked_scalar(value, np_type: np.dtype, what: str):
    """``value`` converted to ``np_type`` as torch's ``checked_convert`` does: an integer or a
    finite float outside the type's range raises (floats into ints truncate; inf and nan
    convert to float types only)."""
    def overflow():
        return RuntimeError(f"{what}: value {value} cannot be converted to type {np_type} "
                            f"without overflow")

    if np_type.kind == "b":
        return np.bool_(value)
    if np_type.kind in "iu":
        if type(value) is float:
            if value != value or abs(value) == float("inf"):
                raise overflow()
            value = int(value)
        info = np.iinfo(np_type)
        if not info.min <= value <= info.max:
            raise overflow()
        return np_type.type(value)
    try:
        as_float = float(value)
    except OverflowError:
        raise overflow() from None
    if as_float != as_float or abs(as_float) == float("inf") or abs(as_float) <= float(np.finfo(np_type).max):
        return np_type.type(as_float)
    raise overflow()


_BFLOAT16_MAX = 3.3895313892515355e38


def checked_fill(value, dtype: DType, what: str):
    """A fill value for a tensor of ``dtype`` (bfloat16's range is checked, then rounded)."""
    if dtype is bfloat16 and type(value) is float and _BFLOAT16_MAX < abs(value) < float("inf"):
        raise RuntimeError(f"{what}: value {value} cannot be converted to type torch.bfloat16 "
                           f"without overflow")
    return checked_scalar(value, dtype._np, what)


# -- bfloat16 ----------------------------------------------------------------------------------

def round_bfloat16(a: np.ndarray) -> None:
    """Round float32 ``a`` in place to the nearest bfloat16 value, ties to even.

    A bfloat16 is the upper 16 bits of a float32. Adding ``0x7FFF`` plus the kept part's
    lowest bit to the bits, then dropping the low 16, rounds to nearest with exact halves to
    the even neighbour. Overflow rounds to inf, as a conversion would; NaNs are restored
    (the carry can turn one into -0.0). Works on any strided view.
    """
    if a.size == 0:
        return
    nans = np.isnan(a)
    bits = a.view(np.uint32)
    bits += (bits >> 16) & 1
    bits += 0x7FFF
    bits &= 0xFFFF0000
    if nans.any():
        a[nans] = np.nan


# -- shapes ------------------------------------------------------------------------------------

def size_arg(args: tuple, what: str) -> tuple:
    """``zeros(2, 3)`` / ``zeros((2, 3))`` / ``zeros([2, 3])`` -> ``(2, 3)``, checked."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    for s in args:  # the usual call: plain non-negative ints, no ABC check (the hot path)
        if s.__class__ is not int or s < 0:
            break
    else:
        return args if args.__class__ is tuple else tuple(args)
    shape = []
    for s in args:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(f"{what}: size must be ints or one tuple of ints, got {args!r}")
        if s < 0:
            raise RuntimeError(f"{what}: Trying to create tensor with negative dimension {s}: "
                               f"{list(args)}")
        shape.append(int(s))
    return tuple(shape)


def infer_shape(args: tuple, numel: int, what: str) -> tuple:
    """A ``view``/``reshape`` target shape, with at most one ``-1`` inferred from ``numel``."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in args):
        raise TypeError(f"{what}: shape must be ints or one tuple of ints, got {args!r}")
    shape = [int(s) for s in args]
    if shape.count(-1) > 1:
        raise RuntimeError(f"{what}: only one dimension can be inferred, got {shape}")
    if any(s < -1 for s in shape):
        raise RuntimeError(f"{what}: invalid shape dimension {min(shape)} in {shape}")
    known = int(np.prod([s for s in shape if s != -1], dtype=np.int64))
    if -1 in shape:
        if known == 0 or numel % known:
            raise RuntimeError(f"shape '{shape}' is invalid for input of size {numel}")
        shape[shape.index(-1)] = numel // known
    elif known != numel:
        raise RuntimeError(f"shape '{shape}' is invalid for input of size {numel}")
    return tuple(shape)


def broadcast_shapes(a: tuple, b: tuple) -> tuple:
    """numpy/torch broadcasting of two shapes, with torch's error message."""
    if a == b:
        return a
    n = max(len(a), len(b))
    a1 = (1,) * (n - len(a)) + a
    b1 = (1,) * (n - len(b)) + b
    out = []
    for i, (x, y) in enumerate(zip(a1, b1)):
        if x != y and x != 1 and y != 1:
            raise RuntimeError(f"The size of tensor a ({x}) must match the size of tensor b "
                               f"({y}) at non-singleton dimension {i}")
        out.append(y if x == 1 else x)
    return tuple(out)


def wrap_dim(dim, ndim: int, what: str) -> int:
    """A dimension index in ``[-ndim, ndim)`` made non-negative (a 0-d tensor takes 0 and -1)."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{what}: dim must be an int, got {dim!r}")
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{what}: Dimension out of range (expected to be in range of "
                         f"[{-n}, {n - 1}], but got {dim})")
    return int(dim) % n


def reduce_dims(dim, ndim: int, what: str) -> tuple:
    """The axes a reduction over ``dim`` (None, an int, or a sequence of ints) covers."""
    if dim is None or (isinstance(dim, (tuple, list)) and not dim):  # torch: [] means all
        return tuple(range(ndim))
    dims = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
    axes = [wrap_dim(d, ndim, what) for d in dims]
    for a in axes:
        if axes.count(a) > 1:
            raise RuntimeError(f"{what}: dim {a} appears multiple times in the list of dims")
    return tuple(sorted(axes)) if ndim else ()


def reduced_shape(shape: tuple, axes: tuple, keepdim: bool) -> tuple:
    if keepdim:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def matmul_shape(a: tuple, b: tuple, a_dtype: DType, b_dtype: DType) -> tuple:
    """``torch.matmul``'s result shape and its ``(batch, m, n, k)``, with torch's errors."""
    if not a or not b:
        raise RuntimeError(f"both arguments to matmul need to be at least 1D, but they are "
                           f"{len(a)}D and {len(b)}D")
    if a_dtype is not b_dtype:
        raise RuntimeError(f"expected m1 and m2 to have the same dtype, but got: {a_dtype} != {b_dtype}")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        if len(a) == 1 and len(b) == 1:
            raise RuntimeError(f"inconsistent tensor size, expected tensor [{a[0]}] and src "
                               f"[{b[0]}] to have the same number of elements, but got {a[0]} "
                               f"and {b[0]} elements respectively")
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied "
                           f"({'x'.join(map(str, a))} and {'x'.join(map(str, b))})")
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    m, k, n = a2[-2], a2[-1], b2[-1]
    shape = batch + ((m,) if len(a) > 1 else ()) + ((n,) if len(b) > 1 else ())
    return shape, int(np.prod(batch, dtype=np.int64)), m, n, k


def host_array(data, dtype: DType | None, what: str, default: DType = float32) -> tuple[np.ndarray, DType]:
    """Host ``data`` as a fresh array of the tensor's numpy type, and the tensor's dtype.

    Without ``dtype``, torch.tensor's inference: Python bools -> bool, ints -> int64, floats
    -> ``default`` (the default dtype); numpy arrays and scalars keep their dtype (float64
    stays float64, as torch), which must be a supported one.
    """
    try:
        array = np.asarray(data)  # no copy of an array: the astype below makes the fresh one
    except (ValueError, OverflowError) as e:
        raise ValueError(f"{what}: cannot make a tensor of this data: {e}") from None
    if array.dtype.kind not in "iufb":
        raise TypeError(f"{what}: cannot make a tensor of {type(data).__name__} data of numpy "
                        f"dtype {array.dtype}; give bools, ints or floats")
    if dtype is None:
        if isinstance(data, (np.ndarray, np.generic)):
            dtype = dtype_of_numpy(array.dtype, what)
        else:
            dtype = {"b": bool_, "f": default}.get(array.dtype.kind, int64)
    dtype = dtype_arg(dtype, None, what)
    with np.errstate(all="ignore"):
        return array.astype(dtype._np, copy=True), dtype


def host_value(value, dtype: DType, what: str):
    """A Python number as the stored value of one element of ``dtype`` (checked, rounded)."""
    v = np.array(checked_fill(value, dtype, what), dtype._np)
    if dtype is bfloat16:
        round_bfloat16(v)
    return v[()]


# -- launch ------------------------------------------------------------------------------------

def _result(t, shape: tuple, dtype: DType):
    """A fresh tensor (of ``t``'s class) on ``t``'s device, for an op to write."""
    s = t._storage
    return allocate(t._make, s.rt, s.device, shape, dtype)


def launch(device, desc, nbytes: int, flops: int, dtype: DType, fn, *written):
    """Enqueue an op on ``device``'s stream (roofline cost); it becomes the last write of the
    storages of the ``written`` tensors. On a device with side streams the op goes on the
    caller's current stream and shares the device (``coopsim.tensor.streams``). An op that
    writes timing-only tensors costs the same and computes nothing (``fn`` is dropped)."""
    if fn is not None and written and type(written[0]._storage) is TimingOnlyStorage:
        fn = None
    if written and device.index is not None and device.side_streams:  # the device is shared
        op = route(written[0]._storage.rt, device, desc, nbytes, flops, dtype._cost, fn)
    else:
        op = device.launch(desc, nbytes, flops, dtype._cost, fn)
    for t in written:
        t._storage.last_write = op
    return op


def flat(tensor, what: str) -> np.ndarray:
    """The data of a contiguous coopsim tensor as a flat numpy view of its storage (what
    collectives and kernels read and write); raises at the caller for anything else."""
    array = getattr(tensor, "_array", None)
    if array is None or not hasattr(tensor, "_storage"):
        raise TypeError(f"{what}: expected a coopsim Tensor, got {type(tensor).__name__}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{what}: Tensors must be contiguous (call .contiguous() or .clone())")
    return array.reshape(-1)


def nbytes(t) -> int:
    return t._array.size * t._dtype.itemsize


def same_device(a, b) -> None:
    if a._storage.rt is not b._storage.rt:
        raise RuntimeError("this tensor belongs to another RuntimeContext: tensors of one "
                           "operation must come from the same context")
    if a._storage.device is not b._storage.device:
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two "
                           f"devices, {place(a._storage.device)} and {place(b._storage.device)}!")


def _check_overlap(out, src) -> None:
    """torch refuses an op whose input partly overlaps the memory it writes."""
    a, b = out._array, src._array
    if out._storage is not src._storage or a is b:
        return
    same = (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides)
    if not same and np.may_share_memory(a, b):
        raise RuntimeError("unsupported operation: some elements of the input tensor and the "
                           "written-to tensor refer to a single memory location. Please clone() "
                           "the tensor before performing the operation.")


# -- ops: each validates on the host, allocates its result, enqueues its fn -------------------
# ``t`` is always a Tensor; ops make their results with ``t._make``, so this module never
# imports ``coopsim.tensor`` (which imports it).

def reduce(name: str, t, dim, keepdim: bool, dtype: DType | None = None):
    """``sum``/``mean`` over ``dim`` (None: all) into ``dtype`` (default: the input's if
    floating, else int64, as torch), accumulated in that dtype's opmath (float32 for 16-bit
    floats, float64, int64 for integers). Cost: bytes of the input read + bytes of the result
    written; one flop an input element."""
    if dtype is not None and not isinstance(dtype, DType):
        raise TypeError(f"{name}(): argument 'dtype' must be torch.dtype, not {type(dtype).__name__}")
    if name == "mean":
        if dtype is not None and not dtype.is_floating_point:
            raise RuntimeError(f"mean(): could not infer output dtype. Optional dtype must be either "
                               f"a floating point or complex dtype. Got: {dtype._scalar_name}")
        if dtype is None and not t._dtype.is_floating_point:
            raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a "
                               f"floating point or complex dtype. Got: {t._dtype._scalar_name}")
    arr = t._array
    axes = reduce_dims(dim, arr.ndim, name)
    out_dtype = dtype or (t._dtype if t._dtype.is_floating_point else int64)
    out = _result(t, reduced_shape(arr.shape, axes, keepdim), out_dtype)
    out_arr = out._array
    acc = np.int64 if out_dtype is bool_ else out_dtype._opmath
    count = math.prod(arr.shape[a] for a in axes)
    rounds = out_dtype is bfloat16

    def fn():
        with np.errstate(all="ignore"):
            r = np.sum(arr, axis=axes, dtype=acc, keepdims=keepdim)
            if name == "mean":
                r = np.divide(r, count, dtype=acc)
            np.copyto(out_arr, r, casting="unsafe")
            if rounds:
                round_bfloat16(out_arr)

    device = t._storage.device
    launch(device, (name + " {} on cuda:{}", arr.shape, device.index), nbytes(t) + nbytes(out),
           arr.size, dtype or t._dtype, fn, out)
    return out


def matmul(a, b, out=None):
    """``torch.matmul``, into a new tensor or ``out`` (of the result's shape and dtype, as
    torch's ``resize_out`` checks). Cost: bytes of a, b and the result; ``2 * batch * m * n * k``
    flops at the dtype's peak (float16/bfloat16 accumulate in float32)."""
    if not isinstance(b, type(a)):
        raise TypeError(f"matmul: expected a Tensor, got {type(b).__name__}")
    same_device(a, b)
    shape, batch, m, n, k = matmul_shape(a._array.shape, b._array.shape, a._dtype, b._dtype)
    if out is None:
        out = _result(a, shape, a._dtype)
    else:
        same_device(a, out)
        if out._dtype is not a._dtype:
            raise RuntimeError(f"Expected out tensor to have dtype {TYPE_META_NAMES[a._dtype]}, but "
                               f"got {TYPE_META_NAMES[out._dtype]} instead")
        if out._array.shape != shape:
            raise RuntimeError(
                f"matmul: out= has shape {list(out._array.shape)} but the result has shape "
                f"{list(shape)}; coopsim does not resize out (PyTorch would, with a warning): "
                f"pass an out of the result's shape")
    aa, ba, out_arr = a._array, b._array, out._array
    compute = a._dtype._opmath
    direct = out_arr.dtype == compute
    rounds = a._dtype is bfloat16

    def fn():
        with np.errstate(all="ignore"):
            x, y = aa.astype(compute, copy=False), ba.astype(compute, copy=False)
            if direct:
                np.matmul(x, y, out=out_arr)
            else:
                np.copyto(out_arr, np.matmul(x, y), casting="unsafe")
            if rounds:
                round_bfloat16(out_arr)

    device = a._storage.device
    launch(device, ("matmul {} @ {} on cuda:{}", aa.shape, ba.shape, device.index),
           nbytes(a) + nbytes(b) + nbytes(out), 2 * batch * m * n * k, a._dtype, fn, out)
    return out


def copy(dst, src):
    """``dst.copy_(src)``: src broadcast to dst's shape and cast to its dtype (floats into
    ints truncate; out-of-range values are numpy's). Cost: bytes of src read + dst written."""
    if not isinstance(src, type(dst)):
        raise TypeError(f"copy_: expected a Tensor as src, got {type(src).__name__}")
    same_device(dst, src)
    d_arr, s_arr = dst._array, src._array
    broadcastable = len(s_arr.shape) <= len(d_arr.shape) and all(
        s == d or s == 1 for s, d in zip(reversed(s_arr.shape), reversed(d_arr.shape)))
    if not broadcastable:
        raise RuntimeError(f"copy_: the source's shape {list(s_arr.shape)} cannot be broadcast "
                           f"to the destination's shape {list(d_arr.shape)}")
    if src is dst:
        return dst
    _check_overlap(dst, src)
    rounds = dst._dtype is bfloat16 and src._dtype is not bfloat16

    def fn():
        with np.errstate(all="ignore"):
            np.copyto(d_arr, s_arr, casting="unsafe")
            if rounds:
                round_bfloat16(d_arr)

    device = dst._storage.device
    launch(device, ("copy_ {} on cuda:{}", d_arr.shape, device.index), nbytes(src) + nbytes(dst),
           0, dst._dtype, fn, dst)
    return dst


def fill(dst, value, what: str):
    """Every element of ``dst`` := ``value`` (a Python number, checked on the host, or a 0-d
    tensor read on the device). Cost: bytes of dst written (+ the value tensor's read)."""
    d_arr, device = dst._array, dst._storage.device
    cost = nbytes(dst)
    if isinstance(value, type(dst)):
        same_device(dst, value)
        if value._array.ndim:
            raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor "
                               f"with {value._array.ndim} dimensions.")
        v_arr, rounds = value._array, dst._dtype is bfloat16 and value._dtype is not bfloat16
        cost += nbytes(value)

        def fn():
            with np.errstate(all="ignore"):
                np.copyto(d_arr, v_arr, casting="unsafe")
                if rounds:
                    round_bfloat16(d_arr)
    else:
        v = host_value(scalar(value, what), dst._dtype, what)

        def fn():
            d_arr[...] = v

    launch(device, (what + " {} on cuda:{}", d_arr.shape, device.index), cost, 0, dst._dtype, fn, dst)
    return dst
