"""Binary elementwise ops with broadcasting and torch's type promotion (arithmetic,
comparisons, logical and bitwise ops, ``pow``); docs/adr/0016-torch-surface.md."""

from __future__ import annotations

import numbers

import numpy as np

from coopsim.tensor.dtypes import bfloat16, bool_, can_cast, result_type, scalar
from coopsim.tensor.host import place
from coopsim.tensor.ops import (
    _check_overlap,
    _result,
    broadcast_shapes,
    checked_scalar,
    launch,
    nbytes,
    round_bfloat16,
    same_device,
)
from coopsim.tensor.state import default_dtype


def _int_power(a, b):
    """torch's integer ``pow``: a negative exponent gives 1 for base 1, +-1 for base -1, else 0
    (numpy refuses negative integer powers)."""
    negative = b < 0
    if not np.any(negative):
        return np.power(a, b)
    r = np.power(a, np.where(negative, 0, b))
    odd = np.where(np.abs(b) % 2 == 1, -1, 1)
    return np.where(negative, np.where(a == 1, 1, np.where(a == -1, odd, 0)), r).astype(r.dtype)


def _trunc_divide(a, b):
    """C division, toward zero; integers stay exact (no float round trip)."""
    q = np.floor_divide(a, b)
    if q.dtype.kind == "f":
        return np.trunc(np.true_divide(a, b))
    return q + ((np.remainder(a, b) != 0) & ((a < 0) != (b < 0)))


def div_name(rounding_mode) -> str:
    """The op of ``div(..., rounding_mode=)``: None is true division, "trunc" C division,
    "floor" Python's floor division (torch.div; the last two keep an integer dtype)."""
    if rounding_mode is None:
        return "div"
    if rounding_mode in ("trunc", "floor"):
        return "div_" + rounding_mode
    raise RuntimeError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but "
                       f"found '{rounding_mode}'")


_UFUNCS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide,
           "div_trunc": _trunc_divide, "div_floor": np.floor_divide, "fmod": np.fmod,
           "pow": np.power, "remainder": np.remainder, "floor_divide": np.floor_divide,
           "maximum": np.maximum, "minimum": np.minimum, "atan2": np.arctan2,
           "bitwise_and": np.bitwise_and, "bitwise_or": np.bitwise_or, "bitwise_xor": np.bitwise_xor,
           "logical_and": np.logical_and, "logical_or": np.logical_or, "logical_xor": np.logical_xor,
           "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
           "gt": np.greater, "ge": np.greater_equal}
_TO_BOOL = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor"})
_TO_FLOAT = frozenset({"div", "atan2"})
_INTEGRAL = frozenset({"bitwise_and", "bitwise_or", "bitwise_xor"})


def binary(name: str, t, other, reflected: bool = False, out=None, alpha=1):
    """``t <name> other`` (``other <name> t`` if ``reflected``) elementwise with broadcasting,
    into a new tensor or into ``out`` (in-place ops pass ``out=t``).

    ``other`` is a tensor or a Python number. Computes in the promoted type's opmath (float32
    for 16-bit floats), then casts to the output's dtype (bool for comparisons and logical
    ops; the default dtype for true division of integers). Cost: bytes of the tensor inputs
    read + bytes of the output written; one flop an output element.
    """
    what = name if out is None else name + "_"
    ot = isinstance(other, type(t))
    if ot:
        same_device(t, other)
    else:
        other = scalar(other, what)
    x, y = (other, t) if reflected else (t, other)
    xt, yt = (ot, True) if reflected else (True, ot)
    default = default_dtype(t._storage.rt)
    promoted = result_type(((x._dtype, x._array.ndim) if xt else x, (y._dtype, y._array.ndim) if yt else y),
                           default)
    if name in _TO_FLOAT and not promoted.is_floating_point:
        promoted = default  # true division, as torch
    if name in _INTEGRAL and promoted.is_floating_point:
        raise RuntimeError(f'"{name}_cuda" not implemented for \'{promoted._scalar_name}\'')
    if name == "sub" and promoted is bool_:
        raise RuntimeError("Subtraction, the `-` operator, with two bool tensors is not supported. "
                           "Use the `^` or `logical_xor()` operator instead.")
    if name == "pow" and not promoted.is_floating_point and not yt and y < 0:
        raise RuntimeError("Integers to negative integer powers are not allowed.")
    compute = promoted._opmath
    result = bool_ if name in _TO_BOOL else promoted
    alpha_c = None
    if alpha != 1:
        alpha = scalar(alpha, what)
        if type(alpha) is float and not promoted.is_floating_point:
            raise RuntimeError("For integral input tensors, argument alpha must not be a floating "
                               "point number.")
        alpha_c = checked_scalar(alpha, compute, what)
    shape = broadcast_shapes(x._array.shape if xt else (), y._array.shape if yt else ())
    if out is None:
        out = _result(t, shape, result)
    else:
        if shape != out._array.shape:
            raise RuntimeError(f"output with shape {list(out._array.shape)} doesn't match the "
                               f"broadcast shape {list(shape)}")
        if not can_cast(result, out._dtype):
            raise RuntimeError(f"result type {result._scalar_name} can't be cast to the desired "
                               f"output type {out._dtype._scalar_name}")
        if ot:
            _check_overlap(out, other)
    xa = x._array if xt else checked_scalar(x, compute, what)
    ya = y._array if yt else checked_scalar(y, compute, what)
    out_arr = out._array
    direct = out_arr.dtype == compute or (result is bool_ and out_arr.dtype == np.bool_)
    rounds = out._dtype is bfloat16
    ufunc = _int_power if name == "pow" and compute.kind in "iu" else _UFUNCS[name]
    in_place = ufunc is not _int_power and ufunc is not _trunc_divide  # takes ``out=``

    def fn():
        with np.errstate(all="ignore"):
            a = xa.astype(compute, copy=False) if xt else xa
            b = ya.astype(compute, copy=False) if yt else ya
            if alpha_c is not None:
                b = np.multiply(b, alpha_c)
            if direct and in_place:
                ufunc(a, b, out=out_arr)
            else:
                np.copyto(out_arr, ufunc(a, b), casting="unsafe")
            if rounds:
                round_bfloat16(out_arr)

    device = t._storage.device
    launch(device, (what + " {} on {}", shape, place(device)),
           nbytes(t) + (nbytes(other) if ot else 0) + nbytes(out), out_arr.size, promoted, fn, out)
    return out


def _is_operand(t, v) -> bool:
    """What an operator accepts: a Tensor or a Python number (else NotImplemented)."""
    return isinstance(v, (type(t), numbers.Real))


class ArithmeticMethods:
    """``add``/``sub``/``mul``/``div``, their in-place forms and operators, on Tensor."""

    __slots__ = ()

    def add(self, other, *, alpha=1) :
        return binary("add", self, other, alpha=alpha)

    def add_(self, other, *, alpha=1) :
        return binary("add", self, other, out=self, alpha=alpha)

    def sub(self, other, *, alpha=1) :
        return binary("sub", self, other, alpha=alpha)

    def sub_(self, other, *, alpha=1) :
        return binary("sub", self, other, out=self, alpha=alpha)

    def mul(self, other) :
        return binary("mul", self, other)

    def mul_(self, other) :
        return binary("mul", self, other, out=self)

    def div(self, other, *, rounding_mode=None) :
        return binary(div_name(rounding_mode), self, other)

    def div_(self, other, *, rounding_mode=None) :
        return binary(div_name(rounding_mode), self, other, out=self)

    def __add__(self, other):
        return binary("add", self, other) if _is_operand(self, other) else NotImplemented

    def __radd__(self, other):
        return binary("add", self, other, reflected=True) if _is_operand(self, other) else NotImplemented

    def __iadd__(self, other):
        return binary("add", self, other, out=self) if _is_operand(self, other) else NotImplemented

    def __sub__(self, other):
        return binary("sub", self, other) if _is_operand(self, other) else NotImplemented

    def __rsub__(self, other):
        return binary("sub", self, other, reflected=True) if _is_operand(self, other) else NotImplemented

    def __isub__(self, other):
        return binary("sub", self, other, out=self) if _is_operand(self, other) else NotImplemented

    def __mul__(self, other):
        return binary("mul", self, other) if _is_operand(self, other) else NotImplemented

    def __rmul__(self, other):
        return binary("mul", self, other, reflected=True) if _is_operand(self, other) else NotImplemented

    def __imul__(self, other):
        return binary("mul", self, other, out=self) if _is_operand(self, other) else NotImplemented

    def __truediv__(self, other):
        return binary("div", self, other) if _is_operand(self, other) else NotImplemented

    def __rtruediv__(self, other):
        return binary("div", self, other, reflected=True) if _is_operand(self, other) else NotImplemented

    def __itruediv__(self, other):
        return binary("div", self, other, out=self) if _is_operand(self, other) else NotImplemented
