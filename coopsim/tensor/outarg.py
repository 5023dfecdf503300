"""``out=`` of the elementwise torch functions and the matrix products: ``torch.add(a, b,
out=c)`` writes into ``c``.

The result is computed straight into ``out`` by the same kernel as the in-place form, so it
costs what the function costs (no extra copy). Checks are PyTorch's: ``out`` must be a tensor
on the input's device and its dtype one the result can be cast to ("result type Float can't
be cast to the desired output type Long", TensorIterator's ``canCast``; ``clamp`` and the
matrix products take no cast at all). One difference:
PyTorch resizes an ``out`` of another shape (with a warning unless it was empty); coopsim
raises instead, naming both shapes, rather than reallocate a tensor the caller holds views of.
"""

from __future__ import annotations

from coopsim.tensor import ops
from coopsim.tensor.dtypes import result_type, scalar
from coopsim.tensor.elementwise import binary, div_name
from coopsim.tensor.math import BINARY, UNARY_FLOPS, clamp, unary
from coopsim.tensor.ops import broadcast_shapes, same_device
from coopsim.tensor.products import bmm, mm
from coopsim.tensor.state import default_dtype
from coopsim.tensor.tensor import Tensor

ARITHMETIC = ("add", "sub", "mul", "div", "pow")  # the binary ones whose Tensor method is elsewhere
WITH_ALPHA = ("add", "sub")
PRODUCTS = ("matmul", "mm", "bmm")
NAMES = (*ARITHMETIC, *BINARY, *UNARY_FLOPS, *PRODUCTS)  # every function here takes ``out=``


def _check(name: str, input, out, shape: tuple) -> None:
    if not isinstance(out, Tensor):
        raise TypeError(f"{name}(): argument 'out' must be Tensor, not {type(out).__name__}")
    same_device(input, out)
    if out._array.shape != shape:
        raise RuntimeError(
            f"torch.{name}: out= has shape {list(out._array.shape)} but the result has shape "
            f"{list(shape)}; coopsim does not resize out (PyTorch would, with a warning): pass "
            f"an out of the result's shape")


def _binary(name: str):
    method = getattr(Tensor, name)

    def function(input, other, *, alpha=1, out=None, **rounding):
        if alpha != 1 and name not in WITH_ALPHA:
            raise TypeError(f"{name}() got an unexpected keyword argument 'alpha'")
        if rounding and (name != "div" or list(rounding) != ["rounding_mode"]):
            raise TypeError(f"{name}() got an unexpected keyword argument '{next(iter(rounding))}'")
        if out is None:
            if rounding:
                return method(input, other, **rounding)
            return method(input, other, alpha=alpha) if name in WITH_ALPHA else method(input, other)
        other_shape = other._array.shape if isinstance(other, Tensor) else ()
        _check(name, input, out, broadcast_shapes(input._array.shape, other_shape))
        op = div_name(rounding.get("rounding_mode")) if rounding else name
        return binary(op, input, other, out=out, alpha=alpha)  # checks the cast

    return function


def _unary(name: str):
    method = getattr(Tensor, name)

    def function(input, *, out=None):
        if out is None:
            return method(input)
        _check(name, input, out, input._array.shape)
        return unary(name, input, out=out)  # checks the cast

    return function


def _clamp(input, min=None, max=None, *, out=None):
    if out is None:
        return clamp(input, min, max)
    shape = input._array.shape
    operands = [(input._dtype, input._array.ndim)]
    for bound in (min, max):
        if isinstance(bound, Tensor):
            shape = broadcast_shapes(shape, bound._array.shape)
            operands.append((bound._dtype, bound._array.ndim))
        elif bound is not None:
            operands.append(scalar(bound, "clamp"))
    _check("clamp", input, out, shape)
    dtype = result_type(operands, default_dtype(input._storage.rt))
    if out._dtype is not dtype:  # clamp's out takes no cast at all (torch 2.13)
        raise RuntimeError(f"Found dtype {out._dtype._scalar_name} but expected {dtype._scalar_name}")
    return clamp(input, min, max, out=out)


def _product(name: str, kernel):
    method = getattr(Tensor, name)

    def function(input, other, *, out=None):
        if out is None:
            return method(input, other)
        if not isinstance(out, Tensor):
            raise TypeError(f"{name}(): argument 'out' must be Tensor, not {type(out).__name__}")
        return kernel(input, other, out)  # checks shape and dtype (matmul's resize_out rules)

    return function


def functions() -> dict:
    """name -> the torch function taking ``out=``, for every name in ``NAMES`` (and ``clip``)."""
    made = {name: _binary(name) for name in (*ARITHMETIC, *BINARY)}
    made.update(matmul=_product("matmul", ops.matmul), mm=_product("mm", mm), bmm=_product("bmm", bmm))
    made.update({name: _unary(name) for name in UNARY_FLOPS if name != "clamp"})
    made["clamp"] = made["clip"] = _clamp
    for name, fn in made.items():
        fn.__name__ = fn.__qualname__ = name
        fn.__doc__ = "Takes ``out=``: the result is written into a tensor of its shape."
    return made
