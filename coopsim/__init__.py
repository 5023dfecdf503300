"""coopsim: run an N-rank distributed program as N greenlets on a modelled machine."""

from coopsim.errors import (
    DeadlockError,
    ProcessException,
    ProcessRaisedException,
    SimulationError,
    SpawnException,
    WatchdogTimeout,
)
from coopsim.runtime import RuntimeContext

__all__ = [
    "DeadlockError",
    "ProcessException",
    "ProcessRaisedException",
    "RuntimeContext",
    "SimulationError",
    "SpawnException",
    "WatchdogTimeout",
]
