"""Host arrays for timing-only tensors: shapes, strides and views, and no data.

A timing-only storage (``RuntimeContext(timing_only=True)``, docs/adr/0020-timing-only-tensors.md)
still needs a numpy array: views, ``reshape``, ``is_contiguous``, ``storage_offset`` and the
collectives' flat buffers are all computed from an array's shape and strides. ``hollow_array``
gives one with the real C strides over a private, read-only anonymous mapping: the kernel
reserves address space but commits no memory (a read-only private mapping is not charged,
and reads would see the shared zero page), so a 1 GiB weight costs no host RSS.

Invariants: the array and every view of it are read-only (numpy refuses writes: a bug that
tries one raises instead of corrupting memory); nothing in coopsim reads its values (ops do
not run their ``fn``, host reads raise).
"""

from __future__ import annotations

import math
import mmap

import numpy as np


def hollow_array(shape: tuple, np_dtype) -> np.ndarray:
    """A read-only C-contiguous array of ``shape`` and ``np_dtype`` that holds no data."""
    np_dtype = np.dtype(np_dtype)
    count = math.prod(shape)
    if count == 0:
        array = np.empty(shape, np_dtype)
    else:
        region = mmap.mmap(-1, count * np_dtype.itemsize, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
        array = np.frombuffer(region, np_dtype, count).reshape(shape)
    array.flags.writeable = False
    return array
