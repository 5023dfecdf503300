"""``ctx.sim``: what has no PyTorch name — virtual time, timers, events, seeds."""

from __future__ import annotations

from coopsim.engine import Event
from coopsim.engine.trace import TraceRecorder


class Sim:
    """``ctx.sim``: ``timer``, ``event``, ``now_ns``, ``trace``, ``seed``; and ``runtime``, the
    runtime port (for extensions and tests: see ``coopsim.runtime.port``)."""

    def __init__(self, rt):
        self.runtime = rt
        self.timer = rt.engine.timer
        """``timer(ns) -> Handle``: completes ``ns`` after the caller's current virtual time."""

    @property
    def seed(self) -> int:
        return self.runtime.seed

    def now_ns(self) -> float:
        """The calling rank's virtual time in ns.

        A rank runs only right after the drain that woke it, so while any rank (or main)
        runs, its time is the engine's current time: one clock serves them all.
        """
        return self.runtime.engine.now_ns

    def event(self, name: str = "event") -> Event:
        """A handle that completes only when someone calls its ``set()``."""
        return Event(self.runtime.engine, f"event {name!r}")

    def trace(self, path=None) -> TraceRecorder:
        """``with ctx.sim.trace("run.json"):`` records every device op and link transfer that
        starts inside the block, and writes them to ``path`` on exit as a Chrome trace (open it
        in https://ui.perfetto.dev or chrome://tracing); see ``coopsim.engine.trace``. With no
        ``path``, nothing is written: a tool reads the recorder's ``events()``."""
        return TraceRecorder(self.runtime, path)
