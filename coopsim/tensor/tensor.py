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

from coopsim.tensor import indexing, ops
from coopsim.tensor.grad import GradMethods
from coopsim.tensor.host import host_device
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
    float64,
    infer_shape,
    int8,
    int16,
    int32,
    int64,
    launch,
    nbytes,
    uint8,
    wrap_dim,
)
from coopsim.tensor.random import RandomMethods
from coopsim.tensor.reductions import ReductionMethods, extreme
from coopsim.tensor.shape import ShapeMethods


class Device:
    """``torch.device``: ``type`` ("cuda"; "cpu" can be named but holds no tensors) and
    ``index`` (None: the caller's current device). Immutable."""

    __slots__ = ("type", "index")

    def __init__(self, type, index=None):
        if isinstance(type, Device):
            type, index = type.type, type.index
        elif isinstance(type, int) and not isinstance(type, bool):
            type, index = "cuda", type
        elif isinstance(type, str) and ":" in type:
            if index is not None:
                raise RuntimeError(f"type (string) must not include an index because index was "
                                   f"passed explicitly: {type}")
            type, _, text = type.partition(":")
            if not text.isdigit():
                raise RuntimeError(f"Invalid device string: '{type}:{text}'")
            index = int(text)
        if type not in ("cuda", "cpu"):
            raise RuntimeError(f"Expected one of cpu, cuda device type at start of device string: {type}")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
            raise RuntimeError(f"Device index must not be negative or a non-int, got {index!r}")
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "index", index)

    def __setattr__(self, name, value):
        raise AttributeError("torch.device is immutable")

    def __eq__(self, other) -> bool:
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"


def device_index(rt, device, what: str) -> int:
    """The index of the device that ``device`` names (None, "cuda", "cuda:i", i, a Device) for
    the caller; raises if it is not a device of the runtime ``rt``'s topology."""
    if device is None:
        return rt.current_device().index
    if not isinstance(device, (Device, str, int)) or isinstance(device, bool):
        raise TypeError(f"{what}: device must be a torch-style device ('cuda', 'cuda:1', 1 or "
                        f"ctx.device(...)), got {device!r}")
    device = Device(device)
    if device.type != "cuda":
        raise RuntimeError(f"{what}: coopsim tensors live in accelerator memory; device "
                           f"'{device}' holds none (use 'cuda' or 'cuda:<i>', or omit device=)")
    if device.index is None:
        return rt.current_device().index
    count = len(rt.devices)
    if device.index >= count:
        raise RuntimeError(f"{what}: device cuda:{device.index} does not exist: topology "
                           f"{rt.topology.name!r} has {count} devices (cuda:0 to cuda:{count - 1})")
    return device.index


def device_of(rt, device, what: str):
    """The place ``device`` names for a new tensor: the host for "cpu", else a SimDevice."""
    if device is not None and not isinstance(device, bool) and isinstance(device, (Device, str)) \
            and Device(device).type == "cpu":
        return host_device(rt)
    return rt.devices[device_index(rt, device, what)]


def _is_operand(v) -> bool:
    """What an operator accepts: a Tensor or a Python number (else NotImplemented)."""
    return isinstance(v, (Tensor, numbers.Real))


# -- the registries (C8) -----------------------------------------------------------------------

# Entry points that read values on the host: each waits (Tensor._read) for the device work
# that writes the tensor's storage.
_HOST_READ_BARRIERS = frozenset({
    "numpy", "tolist", "item", "__array__", "__repr__", "__str__", "__format__", "__bool__",
    "__float__", "__int__", "__index__", "__iter__",
    # the torch surface (docs/adr/0016-torch-surface.md): a copy to the host, and the two
    # comparisons that return a Python bool
    "cpu", "allclose", "equal",
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
    # the torch surface (docs/adr/0016-torch-surface.md). Reading ``t[mask]`` waits for the
    # mask only (its size depends on the mask's values), as torch synchronises there.
    "is_cpu", "is_floating_point", "type_as", "double", "bool", "byte", "char", "short",
    "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor",
    # comparisons, logical and bitwise ops, operators (coopsim.tensor.math)
    "eq", "ne", "lt", "le", "gt", "ge", "eq_", "ne_", "lt_", "le_", "gt_", "ge_",
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "remainder", "remainder_",
    "floor_divide", "floor_divide_", "maximum", "maximum_", "minimum", "minimum_", "atan2",
    "atan2_", "bitwise_and", "bitwise_and_", "bitwise_or", "bitwise_or_", "bitwise_xor",
    "bitwise_xor_", "logical_and", "logical_and_", "logical_or", "logical_or_", "logical_xor",
    "logical_xor_", "__mod__", "__rmod__", "__floordiv__", "__rfloordiv__", "__and__",
    "__rand__", "__or__", "__ror__", "__xor__", "__rxor__", "__invert__", "__abs__",
    "pow", "pow_", "__pow__", "__rpow__", "__ipow__", "clamp", "clamp_", "clip", "isclose",
    "mm", "bmm", "dot", "outer",
    # unary math and its in-place forms
    *(n + s for n in ("abs", "neg", "sign", "exp", "log", "log2", "log1p", "expm1", "sqrt",
                      "rsqrt", "reciprocal", "sin", "cos", "tanh", "sigmoid", "erf", "floor",
                      "ceil", "round", "trunc", "square", "logical_not", "bitwise_not")
      for s in ("", "_")),
    # reductions and selections (coopsim.tensor.reductions)
    "min", "amax", "amin", "argmax", "argmin", "prod", "var", "std", "norm", "all", "any",
    "cumsum", "sort", "argsort", "topk",
    # shape (coopsim.tensor.shape): views, then copies
    "split", "chunk", "narrow", "unbind", "squeeze", "unsqueeze", "permute", "movedim", "expand",
    "expand_as", "flatten", "view_as", "reshape_as", "T", "mT", "repeat", "roll", "flip",
    "tril", "triu",
    # indexing ops (coopsim.tensor.indexing)
    "index_select", "gather", "scatter_", "masked_fill", "masked_fill_", "where",
    # random fills (coopsim.tensor.random)
    "uniform_", "normal_", "random_", "bernoulli_",
    # no autograd (coopsim.tensor.grad)
    "requires_grad", "requires_grad_", "grad", "grad_fn", "is_leaf", "backward", "detach",
    "detach_", "data",
})


class Tensor(GradMethods, MathMethods, ReductionMethods, ShapeMethods, IndexingMethods,
             RandomMethods):
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

    # -- the host-read barrier ------------------------------------------------------------

    def _read(self) -> np.ndarray:
        """C8: wait for the last op that writes this tensor's storage, then return the live
        view of its data (callers copy before handing anything to the user)."""
        storage = self._storage
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
        array = self._read()
        body = np.array2string(array, separator=", ", prefix="tensor(")
        extra = "" if self._dtype in (float32, int64, bool_) else f", dtype={self._dtype}"
        where = "" if self._storage.device.index is None else f", device='{self.device}'"
        return f"tensor({body}{where}{extra})"

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
    def shape(self) -> tuple:
        return self._array.shape

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
        return shape if dim is None else shape[wrap_dim(dim, len(shape), "size")]

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

    def add(self, other, *, alpha=1) -> "Tensor":
        return ops.binary("add", self, other, alpha=alpha)

    def add_(self, other, *, alpha=1) -> "Tensor":
        return ops.binary("add", self, other, out=self, alpha=alpha)

    def sub(self, other, *, alpha=1) -> "Tensor":
        return ops.binary("sub", self, other, alpha=alpha)

    def sub_(self, other, *, alpha=1) -> "Tensor":
        return ops.binary("sub", self, other, out=self, alpha=alpha)

    def mul(self, other) -> "Tensor":
        return ops.binary("mul", self, other)

    def mul_(self, other) -> "Tensor":
        return ops.binary("mul", self, other, out=self)

    def div(self, other) -> "Tensor":
        return ops.binary("div", self, other)

    def div_(self, other) -> "Tensor":
        return ops.binary("div", self, other, out=self)

    def __add__(self, other):
        return ops.binary("add", self, other) if _is_operand(other) else NotImplemented

    def __radd__(self, other):
        return ops.binary("add", self, other, reflected=True) if _is_operand(other) else NotImplemented

    def __iadd__(self, other):
        return ops.binary("add", self, other, out=self) if _is_operand(other) else NotImplemented

    def __sub__(self, other):
        return ops.binary("sub", self, other) if _is_operand(other) else NotImplemented

    def __rsub__(self, other):
        return ops.binary("sub", self, other, reflected=True) if _is_operand(other) else NotImplemented

    def __isub__(self, other):
        return ops.binary("sub", self, other, out=self) if _is_operand(other) else NotImplemented

    def __mul__(self, other):
        return ops.binary("mul", self, other) if _is_operand(other) else NotImplemented

    def __rmul__(self, other):
        return ops.binary("mul", self, other, reflected=True) if _is_operand(other) else NotImplemented

    def __imul__(self, other):
        return ops.binary("mul", self, other, out=self) if _is_operand(other) else NotImplemented

    def __truediv__(self, other):
        return ops.binary("div", self, other) if _is_operand(other) else NotImplemented

    def __rtruediv__(self, other):
        return ops.binary("div", self, other, reflected=True) if _is_operand(other) else NotImplemented

    def __itruediv__(self, other):
        return ops.binary("div", self, other, out=self) if _is_operand(other) else NotImplemented

    def __neg__(self) -> "Tensor":
        return self.neg()

    def matmul(self, other) -> "Tensor":
        return ops.matmul(self, other)

    def __matmul__(self, other):
        return ops.matmul(self, other) if isinstance(other, Tensor) else NotImplemented

    def __rmatmul__(self, other):
        return NotImplemented  # only reached with a non-tensor on the left: unsupported

    def sum(self, dim=None, keepdim: bool = False) -> "Tensor":
        """Sum over ``dim`` (None: all). Integer tensors sum to int64, as torch."""
        return ops.reduce("sum", self, dim, keepdim)

    def mean(self, dim=None, keepdim: bool = False) -> "Tensor":
        return ops.reduce("mean", self, dim, keepdim)

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
                moved = self.cpu() if target.index is None else _to_device(self, target)
                return moved.to(dtype) if dtype is not None else moved
        dtype = dtype_arg(dtype, self._dtype, "to")
        if dtype is self._dtype:
            return self.clone() if copy else self
        return ops.copy(self._like(dtype), self)

    def cuda(self, device=None) -> "Tensor":
        return self.to("cuda" if device is None else device)

    def cpu(self) -> "Tensor":
        """A copy on the host (``self`` if already there): a host read (C8) that waits for
        the writers of the storage, then for a device-to-host copy op enqueued on the
        device's stream and costed as the bytes it moves (docs/adr/0016-torch-surface.md).
        Reading the result never waits."""
        storage = self._storage
        if storage.device.index is None:
            return self
        array = self._read()
        rt, device = storage.rt, storage.device
        out = allocate(self._make, rt, host_device(rt), array.shape, self._dtype,
                       lambda shape, np_dtype: array.copy())
        rt.wait(launch(device, ("copy to host {} from cuda:{}", array.shape, device.index),
                       nbytes(self), 0, self._dtype, None, out))
        return out

    def double(self) -> "Tensor":
        return self.to(float64)

    def bool(self) -> "Tensor":
        return self.to(bool_)

    def byte(self) -> "Tensor":
        return self.to(uint8)

    def char(self) -> "Tensor":
        return self.to(int8)

    def short(self) -> "Tensor":
        return self.to(int16)

    def type_as(self, other) -> "Tensor":
        return self.to(other._dtype)

    def _new(self, what, size, dtype, device, init):
        rt = self._storage.rt
        place = self._storage.device if device is None else device_of(rt, device, what)
        shape = ops.size_arg(size, what)
        return created(rt, what, place, shape, dtype_arg(dtype, self._dtype, what), init)

    def new_zeros(self, *size, dtype=None, device=None) -> "Tensor":
        return self._new("new_zeros", size, dtype, device, np.zeros)

    def new_ones(self, *size, dtype=None, device=None) -> "Tensor":
        return self._new("new_ones", size, dtype, device, np.ones)

    def new_empty(self, *size, dtype=None, device=None) -> "Tensor":
        return self._new("new_empty", size, dtype, device, np.zeros)

    def new_full(self, size, fill_value, *, dtype=None, device=None) -> "Tensor":
        v = ops.host_value(ops.scalar(fill_value, "new_full"), dtype_arg(dtype, self._dtype, "new_full"),
                           "new_full")
        return self._new("new_full", size if isinstance(size, (tuple, list)) else (size,), dtype, device,
                         lambda shape, np_dtype: np.full(shape, v, np_dtype))

    def new_tensor(self, data, *, dtype=None, device=None) -> "Tensor":
        array, dtype = ops.host_array(data, dtype or self._dtype, "new_tensor")
        return self._new("new_tensor", array.shape, dtype, device, given(array))

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


# -- creation ---------------------------------------------------------------------------------

def created(rt, what: str, place, shape: tuple, dtype: DType, init) -> Tensor:
    """A tensor on ``place`` (a SimDevice, or the host) holding ``init(shape, dtype._np)``,
    with the cost of a device op writing it (host data counts as written at memory
    bandwidth: there is no PCIe model). On the host it costs nothing."""
    def data(shape, np_dtype):
        array = init(shape, np_dtype)
        if dtype is bfloat16:
            ops.round_bfloat16(array)
        return array

    t = allocate(Tensor._make, rt, place, shape, dtype, data)
    launch(place, (what + " {} on cuda:{}", shape, place.index), nbytes(t), 0, dtype, None, t)
    return t


def given(array: np.ndarray):
    """An ``init`` for ``created`` that returns a private host array made beforehand."""
    return lambda shape, np_dtype: array


def _to_device(t: Tensor, device) -> Tensor:
    """A host tensor's copy on ``device`` (a host-to-device copy: its cost is the bytes written)."""
    return created(t._storage.rt, "copy from host", device, t._array.shape, t._dtype,
                   given(t._array.copy()))
