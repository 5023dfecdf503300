"""Concurrent ops on one device share it (docs/adr/0017-cuda-streams.md).

``SharedDevice`` runs ops of several streams at once. Each op needs ``work_ns`` of the whole
device (its roofline time without the launch overhead); while ``k`` ops run, each advances at
``1/k`` of the device: the max-min fair share of equal demands, the rule the links use
(ADR 0004) applied to one resource. An op that runs alone takes exactly ``work_ns``.

Invariants: ``_active`` holds ``[handle, remaining_ns]`` for the running ops, in start
order; ``_since`` is when their remaining work was last brought up to date; at most one
completion timer is armed (``_timer``), for the op that would finish first.
"""

from __future__ import annotations

from coopsim.engine.core import Engine, Handle

_EPS_NS = 1e-6


class SharedDevice:
    """The ops running concurrently on one device."""

    def __init__(self, engine: Engine, name: str):
        self.engine = engine
        self.name = name
        self._active: list = []
        self._since = 0.0
        self._timer: Handle | None = None

    def run(self, work_ns: float, desc) -> Handle:
        """Start an op now; the returned handle completes when its work is done."""
        self._advance()
        op = Handle(desc)
        self._active.append([op, float(work_ns)])
        self._rearm()
        return op

    def _advance(self) -> None:
        now = self.engine.now_ns
        if self._active:
            share = (now - self._since) / len(self._active)
            for entry in self._active:
                entry[1] -= share
        self._since = now

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._active:
            return
        first = min(entry[1] for entry in self._active)
        timer = Handle(("{} share: next completion", self.name))
        timer.callbacks = [self._on_timer]
        self._timer = timer
        self.engine.schedule(timer, self.engine.now_ns + max(first, 0.0) * len(self._active))

    def _on_timer(self, _timer) -> None:
        self._timer = None
        self._advance()
        finished = [e for e in self._active if e[1] <= _EPS_NS]
        self._active = [e for e in self._active if e[1] > _EPS_NS]
        for op, _ in finished:
            self.engine.schedule(op, self.engine.now_ns)
        self._rearm()
