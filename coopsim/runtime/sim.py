"""``ctx.sim``: what has no PyTorch name — virtual time, timers, events, seeds."""

from __future__ import annotations

from coopsim.engine import Event
from coopsim.engine.trace import TraceRecorder


class Sim:
    def __init__(self, ctx):
        self._ctx = ctx
        self.timer = ctx.engine.timer
        """``timer(ns) -> Handle``: completes ``ns`` after the caller's current virtual time."""

    @property
    def seed(self) -> int:
        return self._ctx.seed

    def now_ns(self) -> float:
        """The calling rank's virtual time in ns.

        A rank runs only right after the drain that woke it, so while any rank (or main)
        runs, its time is the engine's current time: one clock serves them all.
        """
        return self._ctx.engine.now_ns

    def event(self, name: str = "event") -> Event:
        """A handle that completes only when someone calls its ``set()``."""
        return Event(self._ctx.engine, f"event {name!r}")

    def trace(self, path) -> TraceRecorder:
        """``with ctx.sim.trace("run.json"):`` records every device op and link transfer that
        starts inside the block, and writes them to ``path`` on exit as a Chrome trace (open it
        in https://ui.perfetto.dev or chrome://tracing); see ``coopsim.engine.trace``."""
        return TraceRecorder(self._ctx, path)
