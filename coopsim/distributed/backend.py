"""Backend names: ``torch.distributed.Backend`` and what a backend string means for coopsim.

PyTorch (``torch/distributed/distributed_c10d.py``: ``Backend``, ``BackendConfig``) accepts a
backend name (``"nccl"``, ``"gloo"`` ...) or a ``"device:backend"`` list such as
``"cpu:gloo,cuda:nccl"``, which is also what ``backend=None`` means on a machine with GPUs.
coopsim tensors are CUDA tensors, so the backend mapped to ``cuda`` decides the semantics.
``"coopsim"`` (the name the README uses) means NCCL's semantics. See docs/adr/0015.
"""

from __future__ import annotations

import warnings

from coopsim.distributed.validation import ReduceOp

SEMANTICS = ("nccl", "gloo")  # the backends whose p2p semantics coopsim models
ALIASES = {"coopsim": "nccl"}
DEVICES = ("cpu", "cuda")
DEFAULT = "cpu:gloo,cuda:nccl"  # PyTorch's default device map on a machine with GPUs


class Backend(str):
    """``torch.distributed.Backend``: ``Backend("NCCL") == "nccl"``; unknown names raise."""

    UNDEFINED = "undefined"
    GLOO = "gloo"
    NCCL = "nccl"

    def __new__(cls, name):
        if not isinstance(name, str):
            raise ValueError(f"Backend name must be a string, but got: {name}")
        cuda_backend(name)  # validates
        return str.__new__(cls, name.lower())


def cuda_backend(backend) -> str:
    """The semantics (``"nccl"`` or ``"gloo"``) that ``backend`` gives coopsim's CUDA tensors.

    Raises ValueError naming the accepted strings for anything else.
    """
    if backend is None or backend.__class__ is str:  # None and the plain names: a lookup
        known = _PLAIN.get(backend)
        if known is not None:
            return known
    name = DEFAULT if backend is None else backend
    if not isinstance(name, str):
        raise ValueError(f"init_process_group: backend must be a string or None, got {backend!r}")
    name = name.strip().lower()
    if ":" not in name:
        found = ALIASES.get(name, name)
        if found in SEMANTICS:
            return found
        raise ValueError(_unknown(backend))
    mapping = {}
    for part in name.split(","):
        device, _, value = part.strip().partition(":")
        value = ALIASES.get(value.strip(), value.strip())
        if device.strip() not in DEVICES or value not in SEMANTICS:
            raise ValueError(_unknown(backend))
        mapping[device.strip()] = value
    if "cuda" not in mapping:
        raise ValueError(f"init_process_group: backend {backend!r} maps no backend to cuda, but "
                         f"coopsim tensors are CUDA tensors; add e.g. ',cuda:nccl'")
    return mapping["cuda"]


_PLAIN: dict = {}
_PLAIN.update({name: cuda_backend(name) for name in (None, *SEMANTICS, *ALIASES)})  # what each means


def _unknown(backend) -> str:
    return (f"init_process_group: unknown backend {backend!r}; coopsim accepts "
            f"{', '.join(repr(n) for n in SEMANTICS + tuple(ALIASES))}, None (= {DEFAULT!r}) "
            f"or a 'device:backend' list over {DEVICES} such as 'cpu:gloo,cuda:nccl'")


# What makes a program hang under each backend, for deadlock reports (docs/adr/0015).
P2P_RULES = {
    "nccl": ("under nccl, each send/recv runs on its peer pair's stream after the work already "
             "queued on the rank's current stream, and send()/recv()/Work.wait() make the current "
             "stream wait for the op without blocking the host (ProcessGroupNCCL: getKeySendRecv, "
             "syncStream, WorkNCCL::synchronizeStream); a send completes only once the peer's "
             "matching recv runs, so an op queued behind a send that waits for it never starts"),
    "gloo": ("under gloo, send() blocks the host until the peer has posted the matching recv and "
             "the data went out (gloo's tcp transport sends an unbound buffer only after the "
             "peer's recv notification; SendWork::wait waits for it), recv() blocks until the "
             "data arrived, isend()/irecv() never block"),
}


class DeprecatedReduceOp:
    """``torch.distributed.reduce_op``: ``ReduceOp``'s members, with PyTorch's FutureWarning
    on every attribute read (``_reduce_op.__getattribute__`` in distributed_c10d.py)."""

    def __getattribute__(self, key):
        warnings.warn("`torch.distributed.reduce_op` is deprecated, please use "
                      "`torch.distributed.ReduceOp` instead", FutureWarning, stacklevel=2)
        return getattr(ReduceOp, key)
