"""The matmul family: ``mm``, ``bmm``, ``dot``, ``outer``, ``einsum``, ``addmm``, ``baddbmm``
(docs/adr/0016-torch-surface.md; ``matmul`` itself is ``ops.matmul``).

Semantics and messages are torch 2.13's (``aten/src/ATen/native/LinearAlgebra.cpp``,
``Blas.cpp``): 2-D or 3-D operands of one dtype; ``addmm``/``baddbmm`` broadcast ``input``
to the product's shape, scale by ``beta``/``alpha`` (truncated to integers for integer
tensors) and ignore ``input`` (NaNs included) when ``beta == 0``. Costs: bytes read +
written; ``2 * batch * m * n * k`` flops (``+ 2 * batch * m * n`` for the fused scale-add).
"""

from __future__ import annotations

import numpy as np

from coopsim.tensor import ops
from coopsim.tensor.dtypes import scalar
from coopsim.tensor.elementwise import binary
from coopsim.tensor.kernel import new, run

DEVICE_SIDE = ("mm", "bmm", "dot", "outer", "addmm", "addmm_", "baddbmm", "baddbmm_")


def _need(t, ndim: int, what: str, arg: str = "self"):
    if t._array.ndim != ndim:
        raise RuntimeError(f"{what}: {arg} must be a {ndim}D tensor (got {t._array.ndim}D)")


def mm(a, b, out=None):
    """``torch.mm``: 2-D only."""
    _need(a, 2, "mm")
    if not isinstance(b, type(a)) or b._array.ndim != 2:
        raise RuntimeError("mm: mat2 must be a matrix")
    return ops.matmul(a, b, out)


def bmm(a, b, out=None):
    """``torch.bmm``: 3-D, same batch size (no broadcasting)."""
    _need(a, 3, "bmm", "batch1")
    if not isinstance(b, type(a)) or b._array.ndim != 3:
        raise RuntimeError("bmm: batch2 must be a 3D tensor")
    if a._array.shape[0] != b._array.shape[0]:
        raise RuntimeError(f"Expected size for first two dimensions of batch2 tensor to be: "
                           f"[{a._array.shape[0]}, {a._array.shape[2]}] but got: "
                           f"[{b._array.shape[0]}, {b._array.shape[1]}].")
    return ops.matmul(a, b, out)


def dot(a, b):
    """``torch.dot``: two 1-D tensors of the same size and dtype."""
    if a._array.ndim != 1 or not isinstance(b, type(a)) or b._array.ndim != 1:
        raise RuntimeError("1D tensors expected, but got "
                           f"{a._array.ndim}D and {getattr(getattr(b, '_array', None), 'ndim', '?')}D tensors")
    return ops.matmul(a, b)


def outer(a, b):
    """``torch.outer``: ``a[:, None] * b[None, :]`` (promoted like ``mul``)."""
    if a._array.ndim != 1 or b._array.ndim != 1:
        raise RuntimeError("outer: expected 1D tensors")
    return binary("mul", a.reshape(-1, 1), b.reshape(1, -1))


def einsum(equation: str, *operands):
    """``torch.einsum`` (operands as varargs or one list). Cost: ``2 * prod(extent of every
    distinct index)`` flops (the nested-loop product), bytes of operands and result."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands:
        raise RuntimeError("einsum(): must provide at least one operand")
    first = operands[0]
    for o in operands:
        if not isinstance(o, type(first)):
            raise TypeError(f"einsum(): operands must be Tensors, got {type(o).__name__}")
    dtype = first._dtype
    for o in operands[1:]:
        if o._dtype is not dtype:
            raise RuntimeError(f"einsum(): operands do not have the same dtype: {dtype} and {o._dtype}")
    try:
        dummy = np.einsum(equation, *[np.broadcast_to(np.zeros((), dtype._opmath), o._array.shape)
                                      for o in operands])
    except ValueError as e:
        raise RuntimeError(f"einsum(): {e}") from None
    extents = {}
    lhs = equation.replace(" ", "").split("->")[0].split(",")
    for spec, o in zip(lhs, operands):
        letters = [c for c in spec if c.isalpha()]
        for c, n in zip(letters, o._array.shape[-len(letters):] if letters else ()):
            extents[c] = max(extents.get(c, 1), n)
    flops = 2 * int(np.prod(list(extents.values()), dtype=np.int64)) if extents else 0
    out = new(first, dummy.shape, dtype)
    run("einsum", list(operands), [out],
        lambda *arrays: np.einsum(equation, *[a.astype(dtype._opmath, copy=False) for a in arrays]),
        flops)
    return out


def _scale(value, dtype, what):
    """``alpha``/``beta`` in ``dtype``'s opmath (truncated for integers, as torch)."""
    return ops.checked_scalar(scalar(value, what), dtype._opmath, what)


def _fused_product(what, input, a, b, beta, alpha, out, shape, flops):
    """``out = beta * input + alpha * (a @ b)``; ``input`` broadcast to ``shape`` (the product's);
    ``beta == 0`` ignores ``input`` (NaNs included), as torch."""
    _expandable(input, shape)
    if out is None:
        out = new(a, shape, a._dtype)
    elif input._array.shape != shape:
        raise RuntimeError(f"Bad in-place call: input tensor size {list(input._array.shape)} and output "
                           f"tensor size {list(shape)} should match")
    compute, b_c, a_c = a._dtype._opmath, _scale(beta, a._dtype, what), _scale(alpha, a._dtype, what)

    def fn(i, x, y):
        r = np.matmul(x.astype(compute, copy=False), y.astype(compute, copy=False)) * a_c
        return r if b_c == 0 else r + i.astype(compute, copy=False) * b_c

    run(what, [input, a, b], [out], fn, flops)
    return out


def _expandable(input, shape):
    try:
        np.broadcast_to(np.empty(input._array.shape, np.int8), shape)
    except ValueError:
        raise RuntimeError(_expand_message(input._array.shape, shape)) from None


def _expand_message(have, target):
    lead = len(target) - len(have)
    for k in range(len(have) - 1, -1, -1):
        if have[k] != 1 and have[k] != target[k + lead]:
            return (f"The expanded size of the tensor ({target[k + lead]}) must match the existing size "
                    f"({have[k]}) at non-singleton dimension {k + lead}.  Target sizes: {list(target)}.  "
                    f"Tensor sizes: {list(have)}")
    return f"expand: the shape {list(have)} cannot be broadcast to {list(target)}"


def addmm(input, mat1, mat2, *, beta=1, alpha=1, out=None):
    """``torch.addmm``: ``beta * input + alpha * (mat1 @ mat2)`` of 2-D ``mat1``, ``mat2``.
    Cost: the matmul's ``2 m n k`` + ``2 m n`` flops."""
    for name, m in (("mat1", mat1), ("mat2", mat2)):
        if m._array.ndim != 2:
            raise RuntimeError(f"{name} must be a matrix, got {m._array.ndim}-D tensor")
    for first in (mat1, input):
        if first._dtype is not mat2._dtype:
            raise RuntimeError(f"self and mat2 must have the same dtype, but got "
                               f"{first._dtype._scalar_name} and {mat2._dtype._scalar_name}")
    ops.same_device(input, mat1)
    shape, _, m, n, k = ops.matmul_shape(mat1._array.shape, mat2._array.shape, mat1._dtype, mat2._dtype)
    return _fused_product("addmm", input, mat1, mat2, beta, alpha, out, shape, 2 * m * n * k + 2 * m * n)


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1, out=None):
    """``torch.baddbmm``: ``beta * input + alpha * (batch1 @ batch2)`` of 3-D batches of the
    same size. Cost: ``2 b m n k + 2 b m n`` flops."""
    if len({input._dtype, batch1._dtype, batch2._dtype}) > 1:
        raise RuntimeError(f"Input dtypes must be the same, got: input {ops.TYPE_META_NAMES[input._dtype]}, "
                           f"batch1: {ops.TYPE_META_NAMES[batch1._dtype]}, batch2: "
                           f"{ops.TYPE_META_NAMES[batch2._dtype]}")
    _need(batch1, 3, "baddbmm", "batch1")
    _need(batch2, 3, "baddbmm", "batch2")
    (b, m, k), (b2, k2, n) = batch1._array.shape, batch2._array.shape
    _expandable(input, (b, m, n))  # torch checks it first
    if (b2, k2) != (b, k):
        raise RuntimeError(f"Expected size for first two dimensions of batch2 tensor to be: [{b}, {k}] "
                           f"but got: [{b2}, {k2}].")
    ops.same_device(input, batch1)
    return _fused_product("baddbmm", input, batch1, batch2, beta, alpha, out, (b, m, n),
                          2 * b * m * n * k + 2 * b * m * n)


class ProductMethods:
    """The Tensor methods of this module."""

    __slots__ = ()

    def mm(self, other):
        return mm(self, other)

    def bmm(self, other):
        return bmm(self, other)

    def dot(self, other):
        return dot(self, other)

    def outer(self, other):
        return outer(self, other)

    def addmm(self, mat1, mat2, *, beta=1, alpha=1):
        return addmm(self, mat1, mat2, beta=beta, alpha=alpha)

    def addmm_(self, mat1, mat2, *, beta=1, alpha=1):
        return addmm(self, mat1, mat2, beta=beta, alpha=alpha, out=self)

    def baddbmm(self, batch1, batch2, *, beta=1, alpha=1):
        return baddbmm(self, batch1, batch2, beta=beta, alpha=alpha)

    def baddbmm_(self, batch1, batch2, *, beta=1, alpha=1):
        return baddbmm(self, batch1, batch2, beta=beta, alpha=alpha, out=self)
