"""Collective algorithms as schedules of transfers, and their closed-form costs.

Pure code: no runtime, no clock. ``build_schedule`` compiles a collective into a ``Schedule``
(ADR-0008), ``run_schedule`` applies one to numpy arrays, ``analytic_time_ns`` gives the
alpha-beta-gamma closed form and ``schedule_time_ns`` the ideal timing it is checked against
(ADR-0009).
"""

from coopsim.distributed.algorithms.analytic import (
    analytic_time_ns,
    exact_multiple,
    schedule_time_ns,
)
from coopsim.distributed.algorithms.registry import (
    ALGORITHMS,
    BUILDERS,
    COLLECTIVES,
    IN_PLACE,
    ROOTED,
    algorithms_for,
    build_schedule,
)
from coopsim.distributed.algorithms.schedule import (
    Schedule,
    Step,
    Xfer,
    chunks,
    run_schedule,
)

__all__ = [
    "ALGORITHMS",
    "BUILDERS",
    "COLLECTIVES",
    "IN_PLACE",
    "ROOTED",
    "Schedule",
    "Step",
    "Xfer",
    "algorithms_for",
    "analytic_time_ns",
    "build_schedule",
    "chunks",
    "exact_multiple",
    "run_schedule",
    "schedule_time_ns",
]
