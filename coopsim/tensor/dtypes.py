"""dtypes and torch's type promotion (docs/adr/0016-torch-surface.md).

PyTorch's rules (``c10/core/ScalarType.h`` promoteTypes, ``aten/src/ATen/native/TypeProperties.cpp``
ResultTypeState, and the "Type promotion" section of the ``torch`` tensor attributes docs),
restricted to the supported dtypes:

- categories bool < integer < floating; two dtypes of one category promote to the wider one,
  except ``uint8``+``int8`` -> ``int16`` and ``float16``+``bfloat16`` -> ``float32``;
- in an op, tensors with dimensions decide over 0-d tensors, which decide over Python
  scalars, unless the lower-priority operands are of a higher category; then the result is
  promoted with them (a Python float stands for the default dtype, an int for int64, a
  bool for bool).
"""

from __future__ import annotations

import numbers

import numpy as np


class DType:
    """A tensor element type, as ``torch.dtype``: ``itemsize`` bytes per element.

    Invariants: the instances below are the only ones; they are immutable. ``_np`` is the
    numpy type of the stored data, ``_opmath`` the type ops compute in (float32 for the
    16-bit floats, as CUDA kernels do). bfloat16 has no numpy type: it is stored as float32
    holding only bfloat16 values (every op that writes it rounds, see ``round_bfloat16``);
    its sizes and costs are bfloat16's (2 bytes an element). ``_cost`` names the
    ``peak_flops`` entry of a topology that ops of this dtype run at (the narrow integers
    and bool compute in int32 registers, as CUDA kernels do).
    """

    __slots__ = ("_name", "itemsize", "is_floating_point", "is_signed", "is_complex", "_np",
                 "_opmath", "_scalar_name", "_cost")

    def __init__(self, name: str, itemsize: int, floating: bool, np_type, opmath, scalar_name: str,
                 signed: bool = True, cost: str | None = None):
        for slot, value in (("_name", name), ("itemsize", itemsize), ("is_floating_point", floating),
                            ("is_signed", signed), ("is_complex", False), ("_np", np.dtype(np_type)),
                            ("_opmath", np.dtype(opmath)), ("_scalar_name", scalar_name),
                            ("_cost", cost or name)):
            object.__setattr__(self, slot, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"dtype {self} is immutable")

    def __repr__(self) -> str:
        return f"torch.{self._name}"

    def __reduce__(self):
        return dtype_named, (self._name,)

    def to_real(self) -> "DType":
        return self

    def to_complex(self):
        raise RuntimeError("coopsim has no complex dtypes")


float32 = DType("float32", 4, True, np.float32, np.float32, "Float")
float16 = DType("float16", 2, True, np.float16, np.float32, "Half")
bfloat16 = DType("bfloat16", 2, True, np.float32, np.float32, "BFloat16")
float64 = DType("float64", 8, True, np.float64, np.float64, "Double")
int32 = DType("int32", 4, False, np.int32, np.int32, "Int")
int64 = DType("int64", 8, False, np.int64, np.int64, "Long")
int16 = DType("int16", 2, False, np.int16, np.int16, "Short", cost="int32")
int8 = DType("int8", 1, False, np.int8, np.int8, "Char", cost="int32")
uint8 = DType("uint8", 1, False, np.uint8, np.uint8, "Byte", signed=False, cost="int32")
bool_ = DType("bool", 1, False, np.bool_, np.bool_, "Bool", signed=False, cost="int32")

# the C++ type names torch's messages print for a dtype (caffe2::TypeMeta), e.g. "Expected out
# tensor to have dtype float, but got c10::Half instead" (checked against torch 2.13)
TYPE_META_NAMES = {float32: "float", float16: "c10::Half", bfloat16: "c10::BFloat16",
                   float64: "double", int32: "int", int64: "long int", int16: "short int",
                   int8: "signed char", uint8: "unsigned char", bool_: "bool"}
DTYPES = (float32, float16, bfloat16, float64, int32, int64, int16, int8, uint8, bool_)
_FROM_NUMPY = {d._np: d for d in DTYPES if d is not bfloat16}


_BY_NAME = {d._name: d for d in DTYPES}


def dtype_named(name: str) -> DType:
    """The dtype called ``name`` ("float32" ...)."""
    return _BY_NAME[name]


def dtype_arg(dtype, default: DType, what: str) -> DType:
    """``dtype`` (None: ``default``) checked to be one of ``DTYPES``."""
    if dtype is None:
        return default
    if isinstance(dtype, DType):
        return dtype
    raise TypeError(f"{what}: dtype must be a coopsim dtype (ctx.float32, ctx.float64, "
                    f"ctx.int64, ctx.bool ...; see docs/torch-surface.md), got {dtype!r}")


def dtype_of_numpy(np_dtype, what: str) -> DType:
    """The coopsim dtype of a numpy array's dtype."""
    found = _FROM_NUMPY.get(np.dtype(np_dtype))
    if found is None:
        raise TypeError(f"{what}: numpy dtype {np.dtype(np_dtype)} is not supported; coopsim "
                        f"tensors are {', '.join(d._name for d in DTYPES)} (convert the "
                        f"array first, or pass dtype=...)")
    return found


def category(d: DType) -> int:
    """0 bool, 1 integer, 2 floating."""
    return 2 if d.is_floating_point else (0 if d is bool_ else 1)


def promote(a: DType | None, b: DType | None) -> DType | None:
    """``torch.promote_types`` (None: no operand of that kind)."""
    if a is b or b is None:
        return a
    if a is None:
        return b
    ca, cb = category(a), category(b)
    if ca != cb:
        return a if ca > cb else b
    if ca == 2:
        if {a, b} == {float16, bfloat16}:
            return float32
    elif uint8 in (a, b):
        other = b if a is uint8 else a
        return int16 if other.itemsize == 1 else other
    return a if a.itemsize > b.itemsize else b


def _combine(higher: DType | None, lower: DType | None) -> DType | None:
    """torch's ``combine_categories``: ``lower`` counts only if of a higher category."""
    if higher is None:
        return lower
    if lower is None or higher.is_floating_point:
        return higher
    return promote(higher, lower) if category(lower) > category(higher) else higher


def result_type(operands, default: DType = float32) -> DType:
    """``torch.result_type``. ``operands`` holds ``(dtype, ndim)`` for tensors and Python
    ``bool``/``int``/``float`` scalars (a float counts as ``default``, the default dtype)."""
    dims = zeros = wrapped = None
    for v in operands:
        if type(v) is tuple:
            if v[1]:
                dims = promote(dims, v[0])
            else:
                zeros = promote(zeros, v[0])
        else:
            t = type(v)
            wrapped = promote(wrapped, bool_ if t is bool else int64 if t is int else default)
    return _combine(dims, _combine(zeros, wrapped))


def can_cast(src: DType, dst: DType) -> bool:
    """torch's ``canCast``: not a higher category into a lower one (float into int, int into bool)."""
    return category(dst) >= category(src)


def scalar(value, what: str):
    """A Python number operand as ``bool``, ``int`` or ``float``; else TypeError."""
    t = type(value)
    if t is int or t is float or t is bool:
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{what}: expected a Tensor or a Python number, got {t.__name__}")


class finfo:
    """``torch.finfo`` of a floating dtype (numpy's values; bfloat16's from its format)."""

    def __init__(self, dtype: DType = None):
        dtype = float32 if dtype is None else dtype
        if not dtype.is_floating_point:
            raise TypeError(f"torch.finfo() requires a floating point input type, got {dtype}")
        self.dtype = dtype._name
        if dtype is bfloat16:
            self.bits, self.eps, self.max = 16, 2.0 ** -7, 3.3895313892515355e38
            self.tiny = self.smallest_normal = 2.0 ** -126
            self.resolution = 0.01
        else:
            info = np.finfo(dtype._np)
            self.bits, self.eps, self.max = info.bits, float(info.eps), float(info.max)
            self.tiny = self.smallest_normal = float(info.tiny)
            self.resolution = float(info.resolution)
        self.min = -self.max


class iinfo:
    """``torch.iinfo`` of an integer dtype."""

    def __init__(self, dtype: DType):
        if dtype.is_floating_point or dtype is bool_:
            raise TypeError(f"torch.iinfo() requires an integer input type, got {dtype}")
        info = np.iinfo(dtype._np)
        self.dtype, self.bits, self.min, self.max = dtype._name, info.bits, int(info.min), int(info.max)
