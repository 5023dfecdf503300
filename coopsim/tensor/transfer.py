"""Copies between host and device, dtype conversions and ``new_*`` (docs/adr/0016-torch-surface.md).

``created`` is the one way a tensor comes to hold host data: its storage is written by a
creation op costing the bytes written (no PCIe model) on a device, nothing on the host.
``Tensor.cpu`` is a host read (C8): it waits for the writers of the storage, then for a
device-to-host copy op costed as the bytes it moves.
"""

from __future__ import annotations

import numpy as np

from coopsim.tensor.device import device_of
from coopsim.tensor.dtypes import bool_, dtype_arg, float64, int8, int16, scalar, uint8
from coopsim.tensor.host import host_device
from coopsim.tensor.ops import (
    allocate,
    bfloat16,
    host_array,
    host_value,
    launch,
    nbytes,
    round_bfloat16,
    size_arg,
)

DEVICE_SIDE = ("type_as", "double", "bool", "byte", "char", "short", "new_zeros", "new_ones",
               "new_empty", "new_full", "new_tensor")


def created(make, rt, what: str, place, shape: tuple, dtype, init):
    """``make(array, storage, dtype)`` (``Tensor._make``) on ``place`` (a SimDevice, or the
    host) holding ``init(shape, dtype._np)``, with the cost of a device op writing it (host
    data counts as written at memory bandwidth: there is no PCIe model). On the host it
    costs nothing."""
    if dtype is bfloat16:
        def data(shape, np_dtype):
            array = init(shape, np_dtype)
            round_bfloat16(array)
            return array
    else:
        data = init
    t = allocate(make, rt, place, shape, dtype, data)
    launch(place, ("{} {} on cuda:{}", what, shape, place.index), nbytes(t), 0, dtype, None, t)
    return t


def given(array: np.ndarray):
    """An ``init`` for ``created`` that returns a private host array made beforehand."""
    return lambda shape, np_dtype: array


def to_device(t, device):
    """A host tensor's copy on ``device`` (a host-to-device copy: its cost is the bytes written)."""
    return created(t._make, t._storage.rt, "copy from host", device, t._array.shape, t._dtype,
                   given(t._array.copy()))


class TransferMethods:
    """The Tensor methods of this module (``to``/``cuda``/``float`` ... stay on Tensor)."""

    __slots__ = ()

    def cpu(self) :
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

    def double(self) :
        return self.to(float64)

    def bool(self) :
        return self.to(bool_)

    def byte(self) :
        return self.to(uint8)

    def char(self) :
        return self.to(int8)

    def short(self) :
        return self.to(int16)

    def type_as(self, other) :
        return self.to(other._dtype)

    def _new(self, what, size, dtype, device, init):
        rt = self._storage.rt
        place = self._storage.device if device is None else device_of(rt, device, what)
        shape = size_arg(size, what)
        return created(self._make, rt, what, place, shape, dtype_arg(dtype, self._dtype, what), init)

    def new_zeros(self, *size, dtype=None, device=None) :
        return self._new("new_zeros", size, dtype, device, np.zeros)

    def new_ones(self, *size, dtype=None, device=None) :
        return self._new("new_ones", size, dtype, device, np.ones)

    def new_empty(self, *size, dtype=None, device=None) :
        return self._new("new_empty", size, dtype, device, np.zeros)

    def new_full(self, size, fill_value, *, dtype=None, device=None) :
        v = host_value(scalar(fill_value, "new_full"), dtype_arg(dtype, self._dtype, "new_full"),
                           "new_full")
        return self._new("new_full", size if isinstance(size, (tuple, list)) else (size,), dtype, device,
                         lambda shape, np_dtype: np.full(shape, v, np_dtype))

    def new_tensor(self, data, *, dtype=None, device=None) :
        array, dtype = host_array(data, dtype or self._dtype, "new_tensor")
        return self._new("new_tensor", array.shape, dtype, device, given(array))
