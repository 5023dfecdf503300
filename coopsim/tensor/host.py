"""The host ("cpu") as a place tensors can live (docs/adr/0016-torch-surface.md).

A CPU tensor's ops run at once, in the calling rank, and cost no virtual time (C10: host
Python costs nothing unless configured); reading one needs no barrier, since no device op
ever writes it. ``HostDevice`` gives ``ops.launch`` the same interface as a ``SimDevice``.
"""

from __future__ import annotations

from coopsim.engine import Handle

_KEY = "tensor.host_device"


class HostDevice:
    """The host of one context. ``index`` is None (``torch.device("cpu")``)."""

    index = None

    def __init__(self, engine):
        self._engine = engine

    def launch(self, desc, nbytes, flops=0.0, dtype="float32", fn=None, deps=()) -> Handle:
        """Run ``fn`` now; return a completed handle."""
        if fn is not None:
            fn()
        op = Handle(desc)
        op.done = True
        op.time_ns = self._engine.now_ns
        return op

    def allocate(self, nbytes: int) -> None:
        """Host memory is not modelled."""

    def free(self, nbytes: int) -> None:
        """Host memory is not modelled."""


def host_device(rt) -> HostDevice:
    return rt.context_state(_KEY, lambda: HostDevice(rt.engine))


def place(device) -> str:
    """``"cpu"`` or ``"cuda:<i>"`` for a SimDevice or HostDevice."""
    return "cpu" if device.index is None else f"cuda:{device.index}"
