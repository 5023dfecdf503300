"""``to_host``: what a rank returns, made comparable and picklable on both runtimes.

The rule (the same on coopsim and on real PyTorch):
- a tensor (a coopsim ``Tensor`` or a ``torch.Tensor``) becomes a ``HostTensor``: its dtype's
  name (``"torch.float32"``) and a numpy copy of its values. bfloat16 values travel as float32
  (numpy has no bfloat16; every bfloat16 value is exactly a float32);
- a list, tuple (namedtuples too) or dict is converted element by element (dict keys are kept);
- anything else is returned as is: it must compare with ``==`` and, on real processes, pickle.

On coopsim the conversion runs inside the rank, so reading a tensor there is a host read (C8)
that waits for the device work writing it. No torch object ever crosses a process boundary.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class HostTensor(NamedTuple):
    """A tensor's dtype name and values, detached from any device or process."""

    dtype: str
    values: np.ndarray


def to_host(value):
    """Apply the rule above to ``value`` (recursively through lists, tuples and dicts)."""
    if isinstance(value, HostTensor):
        return value
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*(to_host(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(to_host(v) for v in value)
    if isinstance(value, dict):
        return {k: to_host(v) for k, v in value.items()}
    library = _tensor_library(value)
    if library is None:
        return value
    dtype = repr(value.dtype)  # "torch.float32" on both: coopsim's DType mimics torch's repr
    if dtype == "torch.bfloat16":
        value = value.float()
    if library == "torch":  # may live on a GPU, may require grad; numpy() shares memory
        return HostTensor(dtype, value.detach().cpu().numpy().copy())
    return HostTensor(dtype, value.numpy())  # coopsim: a host read, a copy


def _tensor_library(value) -> str | None:
    """"torch" or "coopsim" if ``value`` is a tensor of that library (torch is not imported)."""
    for cls in type(value).__mro__:
        library = cls.__module__.split(".")[0]
        if cls.__name__ == "Tensor" and library in ("torch", "coopsim"):
            return library
    return None
