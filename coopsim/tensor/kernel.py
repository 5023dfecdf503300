"""One helper for the ops of the torch surface: a fused kernel over numpy.

``run`` enqueues through ``ops.launch`` (the one way device work is enqueued) an op whose
``fn`` computes ``compute(*input arrays)`` when it completes and copies the result(s) into
fresh outputs, with the roofline cost of the bytes it reads and writes and the ``flops`` its
caller charges (docs/adr/0016-torch-surface.md lists the flops per op family).
"""

from __future__ import annotations

import numpy as np

from coopsim.tensor.host import place
from coopsim.tensor.ops import _result, bfloat16, launch, nbytes, round_bfloat16, same_device


def new(t, shape: tuple, dtype):
    """A fresh tensor on ``t``'s device, for an op to write."""
    return _result(t, tuple(shape), dtype)


def opmath(t) -> np.ndarray:
    """``t``'s data as its dtype computes (float32 for 16-bit floats): for ``compute``."""
    return t._array.astype(t._dtype._opmath, copy=False)


def device_error(what: str, error: IndexError, arrays, storages) -> None:
    """An op found an index out of range while running: zero what it writes and make the
    next host read of those storages raise (a CUDA device-side assert)."""
    failure = RuntimeError(f"CUDA error: device-side assert triggered ({what}: {error})")
    for a, s in zip(arrays, storages):
        a[...] = 0
        s.error = failure


def run(what: str, inputs, outputs, compute, flops: int, cost_dtype=None, extra_bytes: int = 0,
        cost_bytes: int | None = None):
    """Enqueue ``outputs[...] = compute(*arrays of inputs)`` on the first input's device.

    ``compute`` gets the input tensors' live arrays (read when the op completes, never at
    enqueue) and returns one array, or a tuple of one a output; results are cast into the
    outputs' dtypes (bfloat16 rounded). An ``IndexError`` raised by ``compute`` (an index
    tensor out of range) is a device-side error: the outputs are zeroed and their next host
    read raises it, as a CUDA device-side assert surfaces at the next synchronisation.
    Cost: bytes of the inputs and outputs (+ ``extra_bytes``; or ``cost_bytes`` if given,
    for ops that touch part of an input), ``flops`` at the peak of ``cost_dtype`` (default:
    the first output's dtype).
    """
    first = inputs[0]
    for other in inputs[1:]:
        same_device(first, other)
    arrays = tuple(t._array for t in inputs)
    outs = tuple(o._array for o in outputs)
    rounds = tuple(o._dtype is bfloat16 for o in outputs)
    storages = tuple(o._storage for o in outputs)

    def fn():
        with np.errstate(all="ignore"):
            try:
                results = compute(*arrays)
            except IndexError as e:
                device_error(what, e, outs, storages)
                return
            if len(outs) == 1:
                results = (results,)
            for o, r, rd in zip(outs, results, rounds):
                np.copyto(o, r, casting="unsafe")
                if rd:
                    round_bfloat16(o)

    device = first._storage.device
    cost = sum(nbytes(t) for t in inputs) + sum(nbytes(o) for o in outputs) + extra_bytes
    if cost_bytes is not None:
        cost = cost_bytes
    shape = first._array.shape
    return launch(device, (what + " {} on {}", shape, place(device)), cost, flops,
                  cost_dtype or outputs[0]._dtype, fn, *outputs)
