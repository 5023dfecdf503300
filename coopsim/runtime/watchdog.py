"""The opt-in wall-clock watchdog: interrupts a rank that never yields (C7), and cannot be
swallowed.

A daemon thread watches the scheduler's current *slice* (one resumption of one task, or one
throw of the abort). Escalation, as pytest-timeout's thread method and torch's
SIGTERM -> SIGKILL do it (docs/adr/0019-watchdog-escalation.md):

1. a slice runs longer than ``limit_s``: the thread raises ``WatchdogInterrupt``
   asynchronously in the scheduler's thread, where the busy task runs Python bytecode;
2. the same slice is still running: it raises it again every ``period_s`` (a loop that
   swallows ``BaseException`` gets it again and again);
3. the same slice is still running ``grace_s`` after the first interrupt: the thread writes
   the report (the busy task, the user's ``file:line`` where it spins, the other tasks'
   states) to stderr and ends the process with ``EXIT_CODE`` (``os._exit``: no cleanup can
   run, as no cleanup of the spinning code can be trusted to).

Code blocked inside C (``time.sleep``, a lock) is interrupted only when it returns to Python;
the grace still ends the process.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time

from coopsim.runtime.frames import user_location

EXIT_CODE = 87  # the process was ended by the watchdog (distinct from 1 = a failure, 128+n = a signal)
DEFAULT_GRACE_S = 5.0


class WatchdogInterrupt(BaseException):
    """Thrown into a busy rank; a BaseException so that ``except Exception`` lets it pass."""


class Watchdog:
    """``describe(busy_task)`` returns the other tasks' lines for the report (called from the
    watchdog thread, only when it is about to end the process)."""

    def __init__(self, limit_s: float, thread_id: int, grace_s: float = DEFAULT_GRACE_S,
                 describe=None, stream=None):
        self.limit_s = limit_s
        self.grace_s = grace_s
        self.period_s = min(limit_s / 4, 0.05)
        self._thread_id = thread_id
        self._describe = describe
        self._stream = stream  # stderr unless a test passes another file
        self.slice = None  # (serial, task, wall start) while a task runs; set by the scheduler
        self.fired = None  # the slice that was interrupted (first time)
        self.fires = 0  # interrupts raised for ``fired``
        self._stop = threading.Event()
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="coopsim-watchdog", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def end_slice(self) -> None:
        """Called by the scheduler when a slice ends: no interrupt fires for it any more, and
        one raised too late (the task yielded first) is withdrawn before it lands in the
        scheduler's own code (the abort must not be cut short by it)."""
        with self.lock:
            self.slice = None
            if self.fired is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread_id), None)

    def _watch(self) -> None:
        first_fire = 0.0
        while not self._stop.wait(self.period_s):
            with self.lock:
                current = self.slice
                if current is None:
                    continue
                now = time.monotonic()
                if current is not self.fired:
                    if now - current[2] <= self.limit_s:
                        continue
                    self.fired, self.fires, first_fire = current, 0, now
                elif now - first_fire > self.grace_s:
                    self._end_process(current[1])
                self.fires += 1
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._thread_id), ctypes.py_object(WatchdogInterrupt))

    def _end_process(self, task) -> None:
        frame = sys._current_frames().get(self._thread_id)
        lines = [
            f"coopsim watchdog: {task.name} ran for more than {self.limit_s:g} s of wall time "
            f"without yielding, and kept running for {self.grace_s:g} s after {self.fires} "
            f"interrupts (it swallows them: a loop that catches BaseException?).",
            f"It spins at {user_location(frame) or 'an unknown place'}.",
            f"Ending the process with exit code {EXIT_CODE}. The other tasks:",
        ]
        if self._describe is not None:
            try:
                lines += [f"  {line}" for line in self._describe(task)]
            except Exception as e:  # the report must not stop the exit
                lines.append(f"  (could not describe them: {e!r})")
        stream = self._stream or sys.stderr
        stream.write("\n".join(lines) + "\n")
        stream.flush()
        os._exit(EXIT_CODE)
