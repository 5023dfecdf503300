"""Device tensors: numpy data on a simulated device, asynchronous ops, the host-read barrier.

Model (docs/adr/0005-device-cost-model.md, docs/adr/0006-host-read-barrier.md):

- A ``Tensor`` is a numpy view (``_array``) of a ``Storage``: one allocation on one
  ``SimDevice``, accounted by ``SimDevice.allocate`` until the storage is garbage collected.
  Indexing, ``view``, ``transpose`` return tensors viewing the same storage.
- Every device op is asynchronous. The host call validates everything (errors are raised
  there, never inside the engine), allocates the result and enqueues the op on the stream of
  the tensors' device with its roofline cost; the op's ``fn`` computes the numbers when the
  op completes, in stream order. The storages it writes record it as ``last_write``.
- Host reads (``_HOST_READ_BARRIERS``) go through ``Tensor._read``, which waits through
  ``ctx.wait`` for that tensor's storage's ``last_write`` only (C8). Everything else
  (``_DEVICE_SIDE``) never waits. ``tests/test_tensor.py`` checks that the two lists cover
  every public name and dunder method of ``Tensor``.
- What each op computes and costs is in ``coopsim.tensor.ops``.

Invariants:
- Every op that writes a storage is enqueued on its device's stream, so stream order alone
  puts an op after the writers of its inputs. (Work that is not a stream op — a kernel, a
  transfer — must be wrapped in one, e.g. ``Stream.enqueue_work``, and set ``last_write``.)
- An op's ``fn`` reads its inputs only when the op completes, never at enqueue.
- A creation op (``zeros``, ``tensor`` ...) writes a storage that nothing can reach before
  the op completes (readers are ordered after it by the stream or by the barrier), so its
  data are set at enqueue and the op carries only its cost.
"""

from __future__ import annotations

import numbers

import numpy as np

from coopsim.tensor import functional, grad, indexing, ops, printing, products, random, reductions, selection
from coopsim.tensor import shape, transfer
from coopsim.tensor import math as tmath
from coopsim.tensor.device import Device, device_index, device_of  # noqa: F401 (re-exported)
from coopsim.tensor.elementwise import ArithmeticMethods, binary
from coopsim.tensor.grad import GradMethods
from coopsim.tensor.indexing import IndexingMethods
from coopsim.tensor.math import MathMethods
from coopsim.tensor.ops import (
    DType,
    allocate,
    bfloat16,
    bool_,
    dtype_arg,
    float16,
    float32,
    infer_shape,
    int32,
    int64,
    wrap_dim,
)
from coopsim.tensor.random import RandomMethods
from coopsim.tensor.reductions import ReductionMethods, extreme
from coopsim.tensor.shape import ShapeMethods
from coopsim.tensor.size import Size, of_shape
from coopsim.tensor.state import default_dtype
from coopsim.tensor.transfer import TransferMethods, to_device


# -- the registries (C8) -----------------------------------------------------------------------

# Entry points that read values on the host: each waits (Tensor._read) for the device work
# that writes the tensor's storage.
_HOST_READ_BARRIERS = frozenset({
    "numpy", "tolist", "item", "__array__", "__repr__", "__str__", "__format__", "__bool__",
    "__float__", "__int__", "__index__", "__iter__",
    # the torch surface (docs/adr/0016-torch-surface.md): a copy to the host, and the two
    # comparisons that return a Python bool, and the ops whose result's size depends on values
    "cpu", "allclose", "equal", *selection.HOST_READS,
})

# Everything else a user can reach on a Tensor: metadata, views and device ops. None waits.
_DEVICE_SIDE = frozenset({
    # metadata (no data needed)
    "shape", "dtype", "device", "ndim", "is_cuda", "numel", "element_size", "dim", "size",
    "stride", "is_contiguous", "storage_offset", "__len__",
    # views of the same storage
    "view", "reshape", "transpose", "t", "__getitem__",
    # device ops (enqueued, asynchronous)
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "matmul", "sum", "mean", "max",
    "copy_", "clone", "contiguous", "fill_", "zero_", "to", "cuda", "float", "half", "bfloat16",
    "int", "long", "__setitem__", "__neg__", "__add__", "__radd__", "__iadd__", "__sub__",
    "__rsub__", "__isub__", "__mul__", "__rmul__", "__imul__", "__truediv__", "__rtruediv__",
    "__itruediv__", "__matmul__", "__rmatmul__", "__deepcopy__",
    # object protocol: construction refused, identity hash, refused pickling
    "__init__", "__hash__", "__reduce_ex__",
    # the torch surface (docs/adr/0016-torch-surface.md): each family module lists its names.
    # Reading ``t[mask]`` waits for the mask only (its size depends on the mask's values), as
    # torch synchronises there.
    *transfer.DEVICE_SIDE, *tmath.DEVICE_SIDE, *products.DEVICE_SIDE, *reductions.DEVICE_SIDE, *shape.DEVICE_SIDE,
    *indexing.DEVICE_SIDE, *random.DEVICE_SIDE, *grad.DEVICE_SIDE, "is_cpu", "is_floating_point",
    "softmax", "log_softmax",
})


class Tensor(ArithmeticMethods, GradMethods, MathMethods, products.ProductMethods, ReductionMethods,
             ShapeMethods, IndexingMethods, selection.SelectionMethods, RandomMethods, TransferMethods):
    """A device tensor: ``shape``/``dtype``/``device`` metadata over a numpy view of a storage.

    Create tensors with the context (``ctx.zeros``, ``ctx.tensor`` ...). Device ops return at
    once (the numbers are computed when the op completes on the device's stream); host reads
    wait for the storage's last write (C8). See the module docstring for the invariants.
    """

    __slots__ = ("_array", "_storage", "_dtype", "_requires_grad")
    __array_ufunc__ = None  # numpy defers to our operators, which refuse arrays: no silent host read

    def __init__(self, *args, **kwargs):
        raise TypeError("coopsim tensors are created by the context: ctx.zeros(...), "
                        "ctx.ones(...), ctx.tensor(data), ctx.from_numpy(array) ...")

    @classmethod
    def _make(cls, array: np.ndarray, storage, dtype: DType) -> "Tensor":
        """The one way tensors come to exist: ``array`` is a view of ``storage.data``."""
        t = object.__new__(cls)
        t._array = array
        t._storage = storage
        t._dtype = dtype
        t._requires_grad = False
        return t

    def softmax(self, dim, dtype=None) -> "Tensor":
        return functional.softmax(self, dim, dtype)

    def log_softmax(self, dim, dtype=None) -> "Tensor":
        return functional.log_softmax(self, dim, dtype)

    # -- the host-read barrier ------------------------------------------------------------

    def _read(self) -> np.ndarray:
        """C8: wait for the last op that writes this tensor's storage, then return the live
        view of its data (callers copy before handing anything to the user)."""
        storage = self._storage
        if type(storage) is ops.TimingOnlyStorage:
            raise RuntimeError(f"cannot read the values of a timing-only tensor (shape "
                               f"{list(self._array.shape)}, {self._dtype}): its runtime was made "
                               f"with RuntimeContext(timing_only=True), whose tensors have shapes "
                               f"and dtypes but no data; run with timing_only=False to get values")
        last = storage.last_write
        if last is not None and not last.done:
            storage.rt.wait(last)
        if storage.error is not None:
            raise storage.error
        return self._array

    def numpy(self, *, force: bool = False) -> np.ndarray:
        """A copy of the values (device memory is not exposed to the host)."""
        if self._dtype is bfloat16:
            raise TypeError("Got unsupported ScalarType BFloat16")
        return self._read().copy()

    def tolist(self):
        return self._read().tolist()

    def item(self):
        if self._array.size != 1:
            raise RuntimeError(f"a Tensor with {self._array.size} elements cannot be converted to Scalar")
        return self._read().reshape(-1)[0].item()

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("a coopsim tensor lives in device memory: it cannot be viewed by "
                             "numpy without a copy (use np.asarray(t) or t.numpy())")
        array = self.numpy()
        return array if dtype is None else array.astype(dtype, copy=False)

    def __repr__(self) -> str:
        if type(self._storage) is ops.TimingOnlyStorage:  # no values to show, as torch's meta
            return f"tensor(..., size={tuple(self._array.shape)}, device='{self.device}', dtype={self._dtype}, timing_only=True)"
        array = self._read()
        default = default_dtype(self._storage.rt)
        return printing.tensor_repr(
            array, floating=self._dtype.is_floating_point,
            device=None if self._storage.device.index is None else str(self.device),
            dtype_name=str(self._dtype), plain_dtype=self._dtype in (default, int64, bool_),
            default_float=self._dtype is default, requires_grad=self._requires_grad)

    def __str__(self) -> str:
        return self.__repr__()

    def __format__(self, spec: str) -> str:
        if self._array.ndim == 0:
            return format(self.item(), spec)
        return object.__format__(self, spec)

    def _one_value(self, what: str):
        if self._array.size != 1:
            raise ValueError(f"only one element tensors can be converted to Python scalars "
                             f"({what} of a tensor of shape {list(self._array.shape)})")
        return self._read().reshape(-1)[0]

    def __bool__(self) -> bool:
        if self._array.size != 1:
            qualifier = "no values" if self._array.size == 0 else "more than one value"
            raise RuntimeError(f"Boolean value of Tensor with {qualifier} is ambiguous")
        return bool(self._read().reshape(-1)[0])

    def __float__(self) -> float:
        return float(self._one_value("float()"))

    def __int__(self) -> int:
        return int(self._one_value("int()"))

    def __index__(self) -> int:
        if self._dtype.is_floating_point or self._array.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self._read().reshape(-1)[0])

    def __iter__(self):
        """Waits once, as a host read, then yields ``self[i]`` views."""
        if self._array.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        self._read()
        return (self[i] for i in range(self._array.shape[0]))

    # -- metadata -------------------------------------------------------------------------

    @property
    def shape(self) -> Size:
        return of_shape(self._array.shape)

    @property
    def dtype(self) -> DType:
        return self._dtype

    @property
    def device(self) -> Device:
        index = self._storage.device.index
        return Device("cpu") if index is None else Device("cuda", index)

    @property
    def ndim(self) -> int:
        return self._array.ndim

    @property
    def is_cuda(self) -> bool:
        return self._storage.device.index is not None

    @property
    def is_cpu(self) -> bool:
        return self._storage.device.index is None

    def is_floating_point(self) -> bool:
        return self._dtype.is_floating_point

    def numel(self) -> int:
        return self._array.size

    def element_size(self) -> int:
        return self._dtype.itemsize

    def dim(self) -> int:
        return self._array.ndim

    def size(self, dim=None):
        shape = self._array.shape
        return of_shape(shape) if dim is None else shape[wrap_dim(dim, len(shape), "size")]

    def stride(self, dim=None):
        """Strides in elements, as torch's."""
        strides = tuple(s // self._array.itemsize for s in self._array.strides)
        return strides if dim is None else strides[wrap_dim(dim, len(strides), "stride")]

    def is_contiguous(self) -> bool:
        return self._array.flags.c_contiguous

    def storage_offset(self) -> int:
        """Offset of the first element in the storage, in elements."""
        base = self._storage.data.__array_interface__["data"][0]
        return (self._array.__array_interface__["data"][0] - base) // self._array.itemsize

    def __len__(self) -> int:
        if self._array.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._array.shape[0]

    # -- views ----------------------------------------------------------------------------

    def _view_of(self, array: np.ndarray) -> "Tensor":
        return self._make(array, self._storage, self._dtype)

    def view(self, *shape) -> "Tensor":
        """Same storage, new shape; raises if the strides do not allow it (use reshape)."""
        shape = infer_shape(shape, self._array.size, "view")
        try:
            return self._view_of(np.reshape(self._array, shape, copy=False))
        except ValueError:
            raise RuntimeError("view size is not compatible with input tensor's size and stride "
                               "(at least one dimension spans across two contiguous subspaces). "
                               "Use .reshape(...) instead.") from None

    def reshape(self, *shape) -> "Tensor":
        """A view when the strides allow it, else a contiguous copy (a device op)."""
        shape = infer_shape(shape, self._array.size, "reshape")
        try:
            return self._view_of(np.reshape(self._array, shape, copy=False))
        except ValueError:
            return self.clone().view(shape)

    def transpose(self, dim0, dim1) -> "Tensor":
        n = self._array.ndim
        return self._view_of(np.swapaxes(self._array, wrap_dim(dim0, n, "transpose"),
                                         wrap_dim(dim1, n, "transpose")))

    def t(self) -> "Tensor":
        if self._array.ndim > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {self._array.ndim}D")
        return self._view_of(self._array.T)

    def __getitem__(self, key) -> "Tensor":
        """Basic indexing (ints, slices with step > 0, None, ...): a view of the same storage;
        advanced indexing (int or bool tensors, lists): a gather (``coopsim.tensor.indexing``)."""
        key = key if isinstance(key, tuple) else (key,)
        if not indexing.is_basic(key):
            return indexing.getitem(self, key)
        for k in key:
            if isinstance(k, slice):
                if k.step is not None and k.step <= 0:
                    raise ValueError("step must be greater than zero")
            elif not (k is None or k is Ellipsis or (isinstance(k, numbers.Integral) and not isinstance(k, bool))):
                raise IndexError(f"coopsim tensors support basic indexing only (ints, slices, "
                                 f"None, ...), got {type(k).__name__}: {k!r}")
        if self._array.ndim == 0 and any(k is not None and k is not Ellipsis for k in key):
            raise IndexError("invalid index of a 0-dim tensor. Use `tensor.item()` in Python or "
                             "`tensor.item<T>()` in C++ to convert a 0-dim tensor to a number")
        if not any(k is Ellipsis for k in key):
            key = key + (Ellipsis,)  # numpy returns a 0-d view, not a scalar copy, when all are ints
        return self._view_of(self._array[key])

    def __setitem__(self, key, value) -> None:
        """``t[key] = value``: fill or copy into the view, a device op (a scatter for an
        advanced index)."""
        if not indexing.is_basic(key if isinstance(key, tuple) else (key,)):
            return indexing.setitem(self, key if isinstance(key, tuple) else (key,), value)
        target = self[key]
        if isinstance(value, Tensor):
            ops.copy(target, value)
        else:
            ops.fill(target, value, "__setitem__")

    # -- device ops -----------------------------------------------------------------------

    def __neg__(self) -> "Tensor":
        return self.neg()

    def matmul(self, other) -> "Tensor":
        return ops.matmul(self, other)

    def __matmul__(self, other):
        return ops.matmul(self, other) if isinstance(other, Tensor) else NotImplemented

    def __rmatmul__(self, other):
        return NotImplemented  # only reached with a non-tensor on the left: unsupported

    def sum(self, dim=None, keepdim: bool = False, *, dtype=None) -> "Tensor":
        """Sum over ``dim`` (None: all). Integer tensors sum to int64, as torch."""
        return ops.reduce("sum", self, dim, keepdim, dtype)

    def mean(self, dim=None, keepdim: bool = False, *, dtype=None) -> "Tensor":
        return ops.reduce("mean", self, dim, keepdim, dtype)

    def max(self, dim=None, keepdim: bool = False):
        """``max()``: a 0-d tensor; ``max(dim)``: ``(values, indices)``, torch's namedtuple."""
        return extreme("max", self, dim, keepdim)

    def copy_(self, src) -> "Tensor":
        return ops.copy(self, src)

    def clone(self) -> "Tensor":
        """A contiguous copy on a new storage."""
        return ops.copy(self._like(self._dtype), self)

    def _like(self, dtype: DType) -> "Tensor":
        """A fresh contiguous tensor of this shape on this device, for an op to write."""
        s = self._storage
        return allocate(self._make, s.rt, s.device, self._array.shape, dtype)

    def contiguous(self) -> "Tensor":
        return self if self._array.flags.c_contiguous else self.clone()

    def fill_(self, value) -> "Tensor":
        return ops.fill(self, value, "fill_")

    def zero_(self) -> "Tensor":
        return ops.fill(self, 0, "zero_")

    def to(self, *args, dtype=None, device=None, copy: bool = False) -> "Tensor":
        """``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(other)``: a cast is a
        copy op; the same dtype and device return ``self`` (unless ``copy``). Copies between
        devices are not modelled (they would be transfers): they raise."""
        for a in args:
            if isinstance(a, DType):
                dtype = a
            elif isinstance(a, Tensor):
                dtype, device = a._dtype, a.device
            else:
                device = a
        if device is not None:
            target = device_of(self._storage.rt, device, "to")
            here = self._storage.device
            if target is not here:
                if here.index is not None and target.index is not None:
                    raise RuntimeError(f"to: copying a tensor from cuda:{here.index} to cuda:"
                                       f"{target.index} is a transfer between devices, which "
                                       f"tensors do not model; use the collectives (send/recv)")
                moved = self.cpu() if target.index is None else to_device(self, target)
                return moved.to(dtype) if dtype is not None else moved
        dtype = dtype_arg(dtype, self._dtype, "to")
        if dtype is self._dtype:
            return self.clone() if copy else self
        return ops.copy(self._like(dtype), self)

    def cuda(self, device=None) -> "Tensor":
        return self.to("cuda" if device is None else device)

    def float(self) -> "Tensor":
        return self.to(float32)

    def half(self) -> "Tensor":
        return self.to(float16)

    def bfloat16(self) -> "Tensor":
        return self.to(bfloat16)

    def int(self) -> "Tensor":
        return self.to(int32)

    def long(self) -> "Tensor":
        return self.to(int64)

    # -- object protocol ------------------------------------------------------------------

    __hash__ = object.__hash__

    def __deepcopy__(self, memo) -> "Tensor":
        return self.clone()

    def __reduce_ex__(self, protocol):
        raise TypeError("coopsim tensors cannot be pickled or shallow-copied (they live in "
                        "simulated device memory); use t.clone(), or t.numpy() for the values")
