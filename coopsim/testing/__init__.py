"""Tools for testing distributed code on coopsim: schedule exploration and replay
(``explore``), fault injection (``faults``), the flight recorder (``flightrecorder``) and the pytest plugin (``plugin``,
registered through the ``pytest11`` entry point; importing this package does not import pytest).

The layers below know nothing of these tools: they consult plain hooks on the runtime port
(``strategy``, ``comm_hooks``, ``error_hooks``, ``spawn_hooks``, ``before_collective``,
``engine.reorder``, ``network.link_faults``, ``SimDevice.slowdown``), which the context
(``coopsim/context.py``) connects to the tools here (docs/adr/0025-testing-hooks.md).
"""

from coopsim.testing.explore import Explorer, ScheduleFailure
from coopsim.testing.faults import Faults, RankKilled
from coopsim.testing.flightrecorder import FlightRecorder

__all__ = ["Explorer", "Faults", "FlightRecorder", "RankKilled", "ScheduleFailure"]
