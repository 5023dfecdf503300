"""Storages: one allocation on one device, accounted from construction until collected;
timing-only storages (no data, docs/adr/0020-timing-only-tensors.md); ``allocate``, the one
way a storage comes to exist."""

from __future__ import annotations

import math

import numpy as np

from coopsim.tensor.dtypes import DType
from coopsim.tensor.hollow import hollow_array
from coopsim.tensor.memory import reserve


class Storage:
    """One allocation on one device (a ``SimDevice``).

    ``last_write`` is the Handle of the last op enqueued that writes ``data`` (None: no op
    ever did, e.g. ``empty``); a host read waits for it. ``nbytes`` (the dtype's size, 2 bytes
    an element for bfloat16) is accounted on ``device`` from construction until the storage
    is collected, after its last tensor. Construct only through ``allocate``.
    """

    __slots__ = ("rt", "device", "data", "nbytes", "last_write", "error")

    def __init__(self, rt, device, data: np.ndarray, nbytes: int):
        self.rt = rt  # the runtime port: host reads wait through rt.wait
        self.device = device
        self.data = data
        self.nbytes = nbytes
        self.last_write = None
        self.error = None  # a device-side error of an op that wrote it, raised by host reads

    def __del__(self):
        self.device.free(self.nbytes)


class TimingOnlyStorage(Storage):
    """A storage of a timing-only runtime (docs/adr/0020-timing-only-tensors.md): ``data`` is
    a ``hollow_array`` (shape and strides, no data); it is accounted on its device as any
    storage, ops that write it cost their time and compute nothing, host reads raise."""

    __slots__ = ()


def timing_only(t) -> bool:
    """True if tensor ``t`` has no data (it was made by a timing-only runtime)."""
    return type(t._storage) is TimingOnlyStorage


def allocate(make, rt, device, shape: tuple, dtype: DType, init=np.empty):
    """``make(array, storage, dtype)`` (``Tensor._make``) over a fresh storage of ``shape``
    whose data is ``init(shape, dtype._np)``: by default uninitialised memory that an op
    will write entirely. The device's accounting comes first, so an allocation beyond its
    memory raises OutOfMemoryError before any host memory is taken. A timing-only runtime
    (``rt.timing_only``) ignores ``init``: its storages hold no data."""
    nbytes = math.prod(shape) * dtype.itemsize
    if device.index is None:
        device.allocate(nbytes)
    else:
        reserve(rt, device, nbytes)
    if rt.timing_only:
        array = hollow_array(shape, dtype._np)
        return make(array, TimingOnlyStorage(rt, device, array, nbytes), dtype)
    try:
        if nbytes >= ALIGNED_FROM_BYTES and init in _ALIGNABLE:
            array = aligned(init, shape, dtype._np)
        else:
            array = init(shape, dtype._np)
    except BaseException:
        device.free(nbytes)
        raise
    return make(array, Storage(rt, device, array, nbytes), dtype)


ALIGN_BYTES = 64  # a cache line
ALIGNED_FROM_BYTES = 1 << 16  # smaller arrays keep numpy's own placement (no extra work)
_ALIGNABLE = (np.empty, np.zeros, np.ones)


def aligned(init, shape: tuple, np_dtype) -> np.ndarray:
    """``init(shape, np_dtype)`` for ``init`` in ``np.empty``/``np.zeros``/``np.ones``, its data
    starting on a cache line (ADR-0034). malloc places a large array 16 bytes into a line once
    it comes from the heap (after frees), so two ranks' buffers end up misaligned against
    each other, and numpy's elementwise loops over such pairs run up to 3x slower. A view of
    an over-allocated byte buffer (zeros: still lazily zeroed pages)."""
    np_dtype = np.dtype(np_dtype)
    nbytes = math.prod(shape) * np_dtype.itemsize
    raw = (np.zeros if init is np.zeros else np.empty)(nbytes + ALIGN_BYTES, np.uint8)
    skip = -raw.ctypes.data % ALIGN_BYTES
    array = raw[skip:skip + nbytes].view(np_dtype).reshape(shape)
    if init is np.ones:
        array.fill(1)
    return array
