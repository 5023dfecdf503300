"""The opt-in wall-clock watchdog: interrupts a rank that never yields (C7).

A daemon thread watches the scheduler's current *slice* (one resumption of one rank). If a
slice lasts longer than ``limit_s``, the thread raises ``WatchdogInterrupt`` asynchronously in
the scheduler's thread, where the busy rank is running Python bytecode. Code blocked inside
C (``time.sleep``, a lock) is interrupted only when it returns to Python.
"""

from __future__ import annotations

import ctypes
import threading
import time


class WatchdogInterrupt(BaseException):
    """Thrown into a busy rank; a BaseException so that ``except Exception`` lets it pass."""


class Watchdog:
    def __init__(self, limit_s: float, thread_id: int):
        self.limit_s = limit_s
        self._thread_id = thread_id
        self.slice = None  # (serial, rank, wall start) while a rank runs; set by the scheduler
        self.fired = None  # the slice that was interrupted
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="coopsim-watchdog", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        period = min(self.limit_s / 4, 0.05)
        while not self._stop.wait(period):
            current = self.slice
            if current is None or current is self.fired:
                continue
            if time.monotonic() - current[2] > self.limit_s:
                with self._lock:
                    if self.slice is current:
                        self.fired = current
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(self._thread_id), ctypes.py_object(WatchdogInterrupt)
                        )
