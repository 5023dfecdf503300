"""coopsim: run an N-rank distributed program as N greenlets on a modelled machine."""

from coopsim.errors import (
    CollectiveMismatchError,
    DeadlockError,
    DistTimeoutError,
    LinkDownError,
    ProcessException,
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
    "ProcessRaisedException",
    "RuntimeContext",
    "SimulationError",
    "SpawnException",
    "WatchdogTimeout",
]
