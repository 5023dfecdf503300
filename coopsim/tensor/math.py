"""Elementwise math and comparisons (docs/adr/0016-torch-surface.md).

Semantics follow ``torch`` (``aten/src/ATen/native/native_functions.yaml`` and the
``torch`` docs of each name): unary float functions of an integer or bool tensor return the
default dtype; comparisons, logical ops and ``isnan``/``isinf``/``isfinite`` return bool;
binary ops promote as ``coopsim.tensor.dtypes``. Costs: bytes read + written; flops per
output element from ``UNARY_FLOPS`` (binary ops, ``relu``, ``nan_to_num``, the checks: 1).
The matmul family is in ``coopsim.tensor.products``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from coopsim.tensor import ops
from coopsim.tensor.dtypes import bool_, finfo, result_type, scalar
from coopsim.tensor.elementwise import _is_operand, binary
from coopsim.tensor.kernel import new, run
from coopsim.tensor.state import default_dtype

# flops charged per element (a transcendental counts as one flop of its dtype's peak)
UNARY_FLOPS = {"abs": 1, "neg": 1, "sign": 1, "exp": 1, "log": 1, "log2": 1, "log1p": 1,
               "expm1": 1, "sqrt": 1, "rsqrt": 2, "reciprocal": 1, "sin": 1, "cos": 1,
               "tanh": 1, "sigmoid": 3, "erf": 1, "floor": 1, "ceil": 1, "round": 1,
               "trunc": 1, "square": 1, "logical_not": 1, "bitwise_not": 1, "clamp": 2}


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


_FLOAT_FNS = {"exp": np.exp, "log": np.log, "log2": np.log2, "log1p": np.log1p, "expm1": np.expm1,
              "sqrt": np.sqrt, "rsqrt": lambda a: 1 / np.sqrt(a), "reciprocal": lambda a: 1 / a,
              "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "sigmoid": _sigmoid}
_SAME_FNS = {"abs": np.abs, "neg": np.negative, "sign": np.sign, "floor": np.floor,
             "ceil": np.ceil, "round": np.round, "trunc": np.trunc, "square": np.square}


def _erf(a):
    """erf elementwise (numpy has none): exact (``math.erf``) for float64; for narrower types
    Abramowitz & Stegun 7.1.26 in float64 (absolute error < 1.5e-7, below float32's)."""
    if a.dtype == np.float64:
        return np.vectorize(math.erf, otypes=[np.float64])(a)
    x = np.abs(a.astype(np.float64))
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(a) * (1.0 - poly * np.exp(-x * x))


_FLOAT_FNS["erf"] = _erf


def unary(name: str, t, out=None):
    """``torch.<name>(t)``; ``out=t`` for the in-place ``<name>_``."""
    if name in _FLOAT_FNS:
        dtype = t._dtype if t._dtype.is_floating_point else default_dtype(t._storage.rt)
        fn = _FLOAT_FNS[name]
        compute = dtype._opmath
    elif name in ("logical_not", "bitwise_not"):
        if name == "bitwise_not" and t._dtype.is_floating_point:
            raise RuntimeError(f"\"bitwise_not_cuda\" not implemented for '{t._dtype._scalar_name}'")
        dtype = bool_ if name == "logical_not" else t._dtype
        fn = np.logical_not if name == "logical_not" or t._dtype is bool_ else np.invert
        compute = t._dtype._opmath
    else:
        if name == "neg" and t._dtype is bool_:
            raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported. "
                               "If you are trying to invert a mask, use the `~` or `logical_not()` "
                               "operator instead.")
        dtype, fn, compute = t._dtype, _SAME_FNS[name], t._dtype._opmath
    if out is None:
        out = new(t, t._array.shape, dtype)
    elif not ops.can_cast(dtype, out._dtype):
        raise RuntimeError(f"result type {dtype._scalar_name} can't be cast to the desired output "
                           f"type {out._dtype._scalar_name}")
    run(name, [t], [out], lambda a: fn(a.astype(compute, copy=False)), UNARY_FLOPS[name] * t._array.size)
    return out


def clamp(t, min=None, max=None, out=None):
    """``torch.clamp``: at least one bound; bounds are numbers or tensors (broadcast)."""
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    bounds = [b for b in (min, max) if b is not None]
    operands = [(t._dtype, t._array.ndim)] + [
        (b._dtype, b._array.ndim) if isinstance(b, type(t)) else scalar(b, "clamp") for b in bounds]
    dtype = result_type(operands, default_dtype(t._storage.rt))
    tensors = [t] + [b for b in bounds if isinstance(b, type(t))]
    consts = {id(b): b for b in bounds if not isinstance(b, type(t))}
    lo_t, hi_t = (isinstance(min, type(t)), isinstance(max, type(t)))
    shape = t._array.shape
    for b in tensors[1:]:
        shape = ops.broadcast_shapes(shape, b._array.shape)
    if out is None:
        out = new(t, shape, dtype)
    compute = dtype._opmath

    def fn(a, *bs):
        it = iter(bs)
        r = a.astype(compute, copy=False)
        if min is not None:
            r = np.maximum(r, next(it) if lo_t else consts[id(min)])
        if max is not None:
            r = np.minimum(r, next(it) if hi_t else consts[id(max)])
        return r

    run("clamp", tensors, [out], fn, UNARY_FLOPS["clamp"] * out._array.size)
    return out


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """``torch.isclose``: ``|a - b| <= atol + rtol * |b|`` elementwise, a bool tensor."""
    if not isinstance(b, type(a)):
        raise TypeError(f"isclose(): argument 'other' must be Tensor, not {type(b).__name__}")
    if a._dtype is not b._dtype:
        raise RuntimeError(f"{a._dtype._scalar_name} did not match {b._dtype._scalar_name}")
    out = new(a, ops.broadcast_shapes(a._array.shape, b._array.shape), bool_)
    run("isclose", [a, b], [out], lambda x, y: np.isclose(
        x.astype(np.float64), y.astype(np.float64), rtol=rtol, atol=atol, equal_nan=equal_nan),
        4 * out._array.size)
    return out


def relu(t, out=None):
    """``max(t, 0)`` elementwise (``torch.relu``; 1 flop an element)."""
    if t._dtype is bool_:
        raise RuntimeError("Boolean inputs not supported for relu")
    out = new(t, t._array.shape, t._dtype) if out is None else out
    run("relu", [t], [out], lambda a: np.maximum(a, 0), t._array.size)
    return out


# isnan, isinf, isfinite: bool results (integers are finite); 1 flop an element
_CLASSIFY = {"isnan": (np.isnan, False), "isinf": (np.isinf, False), "isfinite": (np.isfinite, True)}


def classify(name, t):
    fn, integral = _CLASSIFY[name]
    out = new(t, t._array.shape, bool_)
    if t._dtype.is_floating_point:
        run(name, [t], [out], fn, t._array.size)
    else:
        run(name, [t], [out], lambda a: np.full(a.shape, integral), t._array.size)
    return out


def nan_to_num(t, nan=0.0, posinf=None, neginf=None, out=None):
    """``torch.nan_to_num``: NaN -> ``nan``, +inf -> ``posinf`` (default: the dtype's largest
    finite value), -inf -> ``neginf`` (default: its lowest); integer and bool tensors are
    copied unchanged. 1 flop an element."""
    out = new(t, t._array.shape, t._dtype) if out is None else out
    if not t._dtype.is_floating_point:
        run("nan_to_num", [t], [out], lambda a: a, t._array.size)
        return out
    info = finfo(t._dtype)
    big = info.max if posinf is None else float(posinf)
    small = info.min if neginf is None else float(neginf)
    compute = t._dtype._opmath
    run("nan_to_num", [t], [out], lambda a: np.nan_to_num(
        a.astype(compute), nan=float(nan), posinf=big, neginf=small), t._array.size)
    return out


def is_number(v) -> bool:
    return isinstance(v, numbers.Number)


class MathMethods:
    """The Tensor methods of this module's families."""

    __slots__ = ()

    def clamp(self, min=None, max=None):
        return clamp(self, min, max)

    clip = clamp

    def clamp_(self, min=None, max=None):
        return clamp(self, min, max, out=self)

    def pow(self, exponent):
        return binary("pow", self, exponent)

    def pow_(self, exponent):
        return binary("pow", self, exponent, out=self)

    def __pow__(self, exponent):
        return binary("pow", self, exponent) if _is_operand(self, exponent) else NotImplemented

    def __rpow__(self, base):
        return binary("pow", self, base, reflected=True) if is_number(base) else NotImplemented

    def __ipow__(self, exponent):
        return binary("pow", self, exponent, out=self) if _is_operand(self, exponent) else NotImplemented

    def isclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        return isclose(self, other, rtol, atol, equal_nan)

    def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
        """Host read: waits for both operands (through ``item``)."""
        return bool(isclose(self, other, rtol, atol, equal_nan).all().item())

    def equal(self, other) -> bool:
        """Host read: same shape and every element equal."""
        if self._array.shape != other._array.shape:
            return False
        return bool(binary("eq", self, other).all().item())

    def relu(self):
        return relu(self)

    def relu_(self):
        return relu(self, out=self)

    def isnan(self):
        return classify("isnan", self)

    def isinf(self):
        return classify("isinf", self)

    def isfinite(self):
        return classify("isfinite", self)

    def nan_to_num(self, nan=0.0, posinf=None, neginf=None):
        return nan_to_num(self, nan, posinf, neginf)

    def nan_to_num_(self, nan=0.0, posinf=None, neginf=None):
        return nan_to_num(self, nan, posinf, neginf, out=self)


def _add_method(cls, name, body):
    body.__name__ = name
    body.__qualname__ = f"{cls.__name__}.{name}"
    setattr(cls, name, body)


for _name in UNARY_FLOPS:
    if _name == "clamp":
        continue
    _add_method(MathMethods, _name, (lambda n: lambda self: unary(n, self))(_name))
    _add_method(MathMethods, _name + "_", (lambda n: lambda self: unary(n, self, out=self))(_name))

# comparisons, logical and other binary ops: t.<name>(other), t.<name>_(other)
BINARY = ("eq", "ne", "lt", "le", "gt", "ge", "remainder", "fmod", "floor_divide", "maximum", "minimum",
          "atan2", "bitwise_and", "bitwise_or", "bitwise_xor", "logical_and", "logical_or", "logical_xor")
for _name in BINARY:
    _add_method(MathMethods, _name, (lambda n: lambda self, other: binary(n, self, other))(_name))
    _add_method(MathMethods, _name + "_", (lambda n: lambda self, other: binary(n, self, other, out=self))(_name))

# operators: (dunder, op name, reflected dunder or None)
_OPERATORS = (("__eq__", "eq", None), ("__ne__", "ne", None), ("__lt__", "lt", None),
              ("__le__", "le", None), ("__gt__", "gt", None), ("__ge__", "ge", None),
              ("__mod__", "remainder", "__rmod__"), ("__floordiv__", "floor_divide", "__rfloordiv__"),
              ("__and__", "bitwise_and", "__rand__"), ("__or__", "bitwise_or", "__ror__"),
              ("__xor__", "bitwise_xor", "__rxor__"))
for _dunder, _name, _reflected in _OPERATORS:
    _add_method(MathMethods, _dunder, (lambda n: lambda self, other: binary(n, self, other)
                                       if _is_operand(self, other) else NotImplemented)(_name))
    if _reflected:
        _add_method(MathMethods, _reflected, (lambda n: lambda self, other: binary(
            n, self, other, reflected=True) if is_number(other) else NotImplemented)(_name))
_add_method(MathMethods, "__invert__", lambda self: unary("bitwise_not", self))
_add_method(MathMethods, "__abs__", lambda self: unary("abs", self))
del _name, _dunder, _reflected

# The C8 registry's device-side names of this module (allclose and equal are host reads).
DEVICE_SIDE = (
    *(n + s for n in UNARY_FLOPS if n != "clamp" for s in ("", "_")),
    *(n + s for n in BINARY for s in ("", "_")),
    *(x for d, _, r in _OPERATORS for x in (d, r) if x), "__invert__", "__abs__",
    "pow", "pow_", "__pow__", "__rpow__", "__ipow__", "clamp", "clamp_", "clip", "isclose",
    "relu", "relu_", *_CLASSIFY, "nan_to_num", "nan_to_num_",
)
