"""Shape functions (docs/adr/0016-torch-surface.md).

Views (``chunk``, ``split``, ``tensor_split``, ``unbind``, ``narrow``, ``squeeze``, ``unsqueeze``, ``permute``,
``expand``, ``movedim``, ``T``, ``mT`` ...) share the storage and cost nothing, as in torch.
Copies (``cat``, ``stack``, ``repeat``, ``roll``, ``flip``, ``tril``, ``triu``, ``diag``) are device
ops costing the bytes they read and write, and no flops. ``expand`` returns a read-only
numpy view: writing into an expanded tensor raises, as torch refuses writes where several
elements share one memory location.
"""

from __future__ import annotations

import numbers

import numpy as np

from coopsim.tensor import ops
from coopsim.tensor.dtypes import result_type
from coopsim.tensor.kernel import new, run
from coopsim.tensor.state import default_dtype

DEVICE_SIDE = ("split", "chunk", "narrow", "unbind", "squeeze", "unsqueeze", "permute", "movedim",
               "expand", "expand_as", "flatten", "view_as", "reshape_as", "T", "mT", "repeat",
               "roll", "flip", "tril", "triu", "diag", "tensor_split")


def _ints(args, what):
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    for a in args:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(f"{what}: expected ints, got {args!r}")
    return tuple(int(a) for a in args)


def _tensors(tensors, what):
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError(f"{what}(): expected a non-empty list of Tensors")
    return tensors


def cat(tensors, dim=0):
    """``torch.cat``: the result dtype promotes the inputs' (torch's ``cat`` rule)."""
    tensors = _tensors(tensors, "cat")
    parts = [t for t in tensors if not (t._array.ndim == 1 and t._array.shape[0] == 0)] or tensors[:1]
    first = parts[0]
    d = ops.wrap_dim(dim, first._array.ndim, "cat")
    for t in parts[1:]:
        a, b = first._array.shape, t._array.shape
        if len(a) != len(b):
            raise RuntimeError(f"Tensors must have same number of dimensions: got {len(a)} and {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            if i != d and x != y:
                raise RuntimeError(f"Sizes of tensors must match except in dimension {d}. Expected "
                                   f"size {x} but got size {y} for tensor number {parts.index(t)} in the list.")
    dtype = result_type([(t._dtype, 1) for t in parts], default_dtype(first._storage.rt))
    shape = list(first._array.shape)
    shape[d] = sum(t._array.shape[d] for t in parts)
    out = new(first, shape, dtype)
    run("cat", parts, [out], lambda *arrays: np.concatenate(arrays, axis=d), 0, dtype)
    return out


def stack(tensors, dim=0):
    tensors = _tensors(tensors, "stack")
    shape = tensors[0]._array.shape
    for i, t in enumerate(tensors):
        if t._array.shape != shape:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(shape)} at "
                               f"entry 0 and {list(t._array.shape)} at entry {i}")
    d = ops.wrap_dim(dim, len(shape) + 1, "stack")
    return cat([t.unsqueeze(d) for t in tensors], d)


def split(t, split_size_or_sections, dim=0):
    """``torch.split``: chunks of ``split_size`` (the last may be smaller) or the given sizes."""
    d = ops.wrap_dim(dim, t._array.ndim, "split")
    n = t._array.shape[d]
    if isinstance(split_size_or_sections, (list, tuple)):
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n} (input "
                               f"tensor's size at dimension {d}), but got split_sizes={sizes}")
    else:
        size = int(split_size_or_sections)
        if size <= 0 and n:
            raise RuntimeError(f"split_size can only be 0 if dimension size is 0, but got dimension size of {n}")
        sizes = [min(size, n - s) for s in range(0, n, size)] if n else [0]
    out, start = [], 0
    for s in sizes:
        out.append(narrow(t, d, start, s))
        start += s
    return tuple(out)


def chunk(t, chunks, dim=0):
    """``torch.chunk``: ``ceil(n / chunks)`` elements a chunk, so possibly fewer chunks."""
    if chunks <= 0:
        raise RuntimeError("chunk expects `chunks` to be greater than 0, got: " + str(chunks))
    n = t._array.shape[ops.wrap_dim(dim, t._array.ndim, "chunk")]
    return split(t, max(1, -(-n // chunks)), dim)


def narrow(t, dim, start, length):
    d = ops.wrap_dim(dim, t._array.ndim, "narrow")
    n = t._array.shape[d]
    start = start + n if start < 0 else start
    if not (0 <= start <= n and 0 <= length and start + length <= n):
        raise RuntimeError(f"start ({start}) + length ({length}) exceeds dimension size ({n}).")
    key = [slice(None)] * t._array.ndim
    key[d] = slice(start, start + length)
    return t._view_of(t._array[tuple(key)])


def tensor_split(t, indices_or_sections=None, dim=0, *, sections=None, indices=None):
    """``torch.tensor_split``: ``sections`` (an int) parts of sizes differing by at most one,
    the first ``n % sections`` one longer; or the parts between ``indices`` (Python slice
    bounds: clipped, negative from the end, empty when reversed). Views, as torch's. Indices
    given as a tensor are read on the host (a wait for its writer if it is on the device)."""
    given = [v for v in (indices_or_sections, sections, indices) if v is not None]
    if len(given) != 1:
        raise TypeError("tensor_split() takes one of indices_or_sections, sections or indices")
    spec = given[0]
    if isinstance(spec, type(t)):
        if spec._dtype is not ops.int64:
            raise RuntimeError(f"tensor_split expected tensor_indices_or_sections to have dtype of long, "
                               f"but got {spec._dtype._scalar_name}")
        if spec._array.ndim > 1:
            raise RuntimeError(f"tensor_split expected tensor_indices_or_sections to be a zero-dimensional "
                               f"or one-dimensional tensor, but got a tensor with {spec._array.ndim} dims")
        spec = spec.tolist()  # torch wants it on the CPU; coopsim's tensor() is on the device: read it
    if t._array.ndim == 0:
        raise RuntimeError("tensor_split expected at least a 1-dimensional tensor, but got a tensor with 0 dims")
    d = ops.wrap_dim(dim, t._array.ndim, "tensor_split")
    if isinstance(spec, (list, tuple)):
        bounds = [None, *_ints(tuple(spec), "tensor_split"), None]
    else:
        parts = _ints((spec,), "tensor_split")[0]
        if parts <= 0:
            raise RuntimeError(f"number of sections must be larger than 0, got {parts}")
        n = t._array.shape[d]
        size, extra = divmod(n, parts)
        bounds = [0]
        for i in range(parts):
            bounds.append(bounds[-1] + size + (i < extra))
    lead = (slice(None),) * d
    return tuple(t._view_of(t._array[lead + (slice(lo, hi),)]) for lo, hi in zip(bounds, bounds[1:]))


def unbind(t, dim=0):
    d = ops.wrap_dim(dim, t._array.ndim, "unbind")
    return tuple(t._view_of(t._array[(slice(None),) * d + (i, Ellipsis)]) for i in range(t._array.shape[d]))


def squeeze(t, dim=None):
    arr = t._array
    if dim is None:
        return t._view_of(arr.reshape(tuple(s for s in arr.shape if s != 1)))
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    axes = {ops.wrap_dim(x, arr.ndim, "squeeze") for x in dims}
    return t._view_of(arr.reshape(tuple(s for i, s in enumerate(arr.shape) if not (i in axes and s == 1))))


def unsqueeze(t, dim):
    d = ops.wrap_dim(dim, t._array.ndim + 1, "unsqueeze")
    return t._view_of(np.expand_dims(t._array, d))


def permute(t, *dims):
    dims = _ints(dims, "permute")
    n = t._array.ndim
    if len(dims) != n:
        raise RuntimeError(f"permute(sparse_coo): number of dimensions in the tensor input does not "
                           f"match the length of the desired ordering of dimensions i.e. input.dim() = "
                           f"{n} is not equal to len(dims) = {len(dims)}")
    axes = [ops.wrap_dim(x, n, "permute") for x in dims]
    if len(set(axes)) != n:
        raise RuntimeError("permute(): duplicate dims are not allowed.")
    return t._view_of(np.transpose(t._array, axes))


def movedim(t, source, destination):
    return t._view_of(np.moveaxis(t._array, source, destination))


def expand(t, *sizes):
    sizes = _ints(sizes, "expand")
    arr = t._array
    if len(sizes) < arr.ndim:
        raise RuntimeError(f"expand: the number of sizes provided ({len(sizes)}) must be greater or "
                           f"equal to the number of dimensions in the tensor ({arr.ndim})")
    lead = len(sizes) - arr.ndim
    target = tuple(arr.shape[i - lead] if s == -1 and i >= lead else s for i, s in enumerate(sizes))
    try:
        return t._view_of(np.broadcast_to(arr, target))
    except ValueError:
        raise RuntimeError(f"The expanded size of the tensor must match the existing size at "
                           f"non-singleton dimensions. Target sizes: {list(sizes)}. Tensor sizes: "
                           f"{list(arr.shape)}") from None


def flatten(t, start_dim=0, end_dim=-1):
    arr = t._array
    if arr.ndim == 0:
        return t.reshape(1)
    s = ops.wrap_dim(start_dim, arr.ndim, "flatten")
    e = ops.wrap_dim(end_dim, arr.ndim, "flatten")
    if s > e:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    shape = arr.shape[:s] + (int(np.prod(arr.shape[s:e + 1], dtype=np.int64)),) + arr.shape[e + 1:]
    return t.reshape(shape)


def _copy_op(what, t, shape, compute):
    out = new(t, shape, t._dtype)
    run(what, [t], [out], compute, 0)
    return out


def repeat(t, *sizes):
    sizes = _ints(sizes, "repeat")
    if len(sizes) < t._array.ndim:
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number of "
                           "dimensions of tensor")
    lead = len(sizes) - t._array.ndim
    base = (1,) * lead + t._array.shape
    shape = tuple(b * s for b, s in zip(base, sizes))
    return _copy_op("repeat", t, shape, lambda a: np.tile(a.reshape(base), sizes))


def roll(t, shifts, dims=None):
    if dims is None:
        return _copy_op("roll", t, t._array.shape, lambda a: np.roll(a, shifts))
    return _copy_op("roll", t, t._array.shape, lambda a: np.roll(a, shifts, axis=dims))


def flip(t, *dims, **named):
    if named:  # torch.flip(input, dims=...)
        if dims or list(named) != ["dims"]:
            raise TypeError(f"flip() got an unexpected keyword argument '{next(iter(named))}'")
        dims = (named["dims"],)
    dims = _ints(dims, "flip")
    axes = tuple(ops.wrap_dim(d, t._array.ndim, "flip") for d in dims)
    return _copy_op("flip", t, t._array.shape, lambda a: np.flip(a, axes))


def tril(t, diagonal=0, upper=False):
    if t._array.ndim < 2:
        raise RuntimeError(f"{'triu' if upper else 'tril'}: input tensor must have at least 2 dimensions")
    fn = np.triu if upper else np.tril
    return _copy_op("triu" if upper else "tril", t, t._array.shape, lambda a: fn(a, diagonal))


def diag(t, diagonal=0):
    """``torch.diag``: of a 1-D tensor the square matrix with it on the ``diagonal``-th
    diagonal (above the main one if positive); of a 2-D tensor a copy of that diagonal."""
    if t._array.ndim not in (1, 2):
        raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {t._array.ndim}D")
    k = int(diagonal)
    if t._array.ndim == 1:
        n = t._array.shape[0] + abs(k)
        return _copy_op("diag", t, (n, n), lambda a: np.diag(a, k))
    rows, cols = t._array.shape
    length = max(0, min(rows, cols - k) if k >= 0 else min(rows + k, cols))
    return _copy_op("diag", t, (length,), lambda a: np.diagonal(a, k))


class ShapeMethods:
    """The Tensor methods of this module."""

    __slots__ = ()

    def split(self, split_size, dim=0):
        return split(self, split_size, dim)

    def chunk(self, chunks, dim=0):
        return chunk(self, chunks, dim)

    def narrow(self, dim, start, length):
        return narrow(self, dim, start, length)

    def tensor_split(self, indices_or_sections=None, dim=0, *, sections=None, indices=None):
        return tensor_split(self, indices_or_sections, dim, sections=sections, indices=indices)

    def unbind(self, dim=0):
        return unbind(self, dim)

    def squeeze(self, dim=None):
        return squeeze(self, dim)

    def unsqueeze(self, dim):
        return unsqueeze(self, dim)

    def permute(self, *dims):
        return permute(self, *dims)

    def movedim(self, source, destination):
        return movedim(self, source, destination)

    def expand(self, *sizes):
        return expand(self, *sizes)

    def expand_as(self, other):
        return expand(self, other._array.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        return flatten(self, start_dim, end_dim)

    def view_as(self, other):
        return self.view(other._array.shape)

    def reshape_as(self, other):
        return self.reshape(other._array.shape)

    @property
    def T(self):
        """All dimensions reversed (torch deprecates it beyond 2-D; it still works)."""
        return self._view_of(self._array.T)

    @property
    def mT(self):
        if self._array.ndim < 2:
            raise RuntimeError("tensor.mT is only supported on matrices or batches of matrices. "
                               f"Got {self._array.ndim}-D tensor.")
        return self._view_of(np.swapaxes(self._array, -1, -2))

    def repeat(self, *sizes):
        return repeat(self, *sizes)

    def roll(self, shifts, dims=None):
        return roll(self, shifts, dims)

    def flip(self, *dims, **named):
        return flip(self, *dims, **named)

    def tril(self, diagonal=0):
        return tril(self, diagonal)

    def triu(self, diagonal=0):
        return tril(self, diagonal, upper=True)

    def diag(self, diagonal=0):
        return diag(self, diagonal)
