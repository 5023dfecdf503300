"""``torch.Size``: the type of ``Tensor.shape`` and ``Tensor.size()``.

A tuple of ints (it compares, hashes and unpacks as the tuple), whose repr is
``torch.Size([2, 3])``, with ``numel()``; slicing it, adding a tuple to it or repeating it
gives a ``Size`` again, as torch's (``torch/csrc/Size.cpp``). Invariant: every element is a
Python int.
"""

from __future__ import annotations

import math
import operator

_new = tuple.__new__


def of_shape(shape: tuple) -> "Size":
    """A ``Size`` of a numpy shape (already Python ints): the hot path of ``Tensor.shape``."""
    return _new(Size, shape)


class Size(tuple):
    """``torch.Size(sizes)``: an iterable of ints (or objects with ``__index__``)."""

    __slots__ = ()

    def __new__(cls, sizes=()):
        values = []
        for i, v in enumerate(sizes):
            if not hasattr(type(v), "__index__"):
                raise TypeError(f"torch.Size() takes an iterable of 'int' (item {i} is "
                                f"'{type(v).__name__}')")
            values.append(operator.index(v))
        return _new(cls, values)

    def __repr__(self) -> str:
        return f"torch.Size({list(self)})"

    __str__ = __repr__

    def numel(self) -> int:
        """The number of elements of a tensor of this shape (1 for ``Size([])``)."""
        return math.prod(self)

    def __getitem__(self, key):
        item = tuple.__getitem__(self, key)
        return _new(Size, item) if isinstance(key, slice) else item

    def __add__(self, other):
        if not isinstance(other, tuple):
            return NotImplemented
        return _new(Size, tuple.__add__(self, other))

    def __radd__(self, other):
        if not isinstance(other, tuple):
            return NotImplemented
        return _new(Size, tuple.__add__(other, self))

    def __mul__(self, n):
        return _new(Size, tuple.__mul__(self, n))

    __rmul__ = __mul__

    def __reduce__(self):
        return Size, (tuple(self),)
