"""coopsim: run an N-rank distributed program as N greenlets on a modelled machine."""

from coopsim.errors import (
    CollectiveMismatchError,
    DeadlockError,
    DistTimeoutError,
    LinkDownError,
    ProcessException,
    ProcessExitedException,
    ProcessRaisedException,
    SimulationError,
    SpawnException,
    WatchdogTimeout,
)
from coopsim.context import RuntimeContext

__all__ = [
    "CollectiveMismatchError",
    "DeadlockError",
    "DistTimeoutError",
    "LinkDownError",
    "ProcessException",
    "ProcessExitedException",
    "ProcessRaisedException",
    "RuntimeContext",
    "SimulationError",
    "SpawnException",
    "WatchdogTimeout",
    "crosscheck",
    "launch",
]


def __getattr__(name):
    """``coopsim.launch`` and ``coopsim.crosscheck`` (the PyTorch bridge), imported on first use
    so that ``import coopsim`` never imports torch or the bridge."""
    if name in ("launch", "crosscheck"):
        from coopsim import bridge

        return getattr(bridge, name)
    raise AttributeError(f"module 'coopsim' has no attribute {name!r}")
