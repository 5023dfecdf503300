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


def read_only_view(t):
    """The values of tensor ``t`` as a read-only numpy view of its storage, no copy: a host
    read (C8, docs/adr/0006) that first waits, through ``ctx.wait``, for the last op that
    writes the storage, exactly as ``t.numpy()`` does.

    For host code that reads a large output once and must not copy it (the bench's check,
    docs/adr/0028). No PyTorch name: it lives here, not on the torch-shaped surface.
    The view is not a snapshot: read it before enqueueing more work that writes ``t``.
    bfloat16 reads as its storage, float32 values rounded to bfloat16; a timing-only tensor
    raises as every host read does."""
    view = t._read().view()
    view.flags.writeable = False
    return view
