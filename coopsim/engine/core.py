"""The discrete-event core: a virtual clock, an event heap and handles.

Invariants:
- ``Engine.now_ns`` never decreases; nothing is scheduled before it (C5).
- Events complete in ``(time_ns, order scheduled)`` order, so events
  at the same instant complete in the order they were scheduled (C9: no id() or hash()),
  unless ``reorder`` (schedule exploration) permutes them, deterministically.
- A ``Handle`` completes at most once; its callbacks run in registration order, inside
  ``Engine.step_instant``, which only the scheduler (main greenlet) calls (C1).
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush

_INF = float("inf")
_NAN = float("nan")  # equal to no time


class Handle:
    """One piece of simulated work: pending until the engine completes it.

    ``done`` and ``time_ns`` (the virtual completion time, ``None`` while pending) are
    read by waiters; ``desc`` says what the work is, for deadlock reports. To keep the hot
    path cheap, ``desc`` may be given as a tuple ``(format, *args)``, formatted on read.
    ``callbacks`` is None until the first one is added (``add_callback``). ``waiters`` is
    the runtime's: the task, or list of tasks, blocked on it; the engine moves them, opaque,
    onto ``Engine.ready`` when the handle completes, after its callbacks (no callback per wait).
    """

    __slots__ = ("done", "time_ns", "_desc", "callbacks", "waiters")

    def __init__(self, desc):
        self.done = False
        self.time_ns: float | None = None
        self._desc = desc
        self.callbacks: list | None = None
        self.waiters: list | None = None

    @property
    def desc(self) -> str:
        d = self._desc
        if type(d) is str:
            return d
        if type(d) is tuple:
            return d[0].format(*d[1:])
        return f"timer({d:g} ns)"  # Engine.timer stores just its delay

    def add_callback(self, callback) -> None:
        """Call ``callback(handle)`` when the handle completes (it must not be done yet)."""
        if self.callbacks is None:
            self.callbacks = [callback]
        else:
            self.callbacks.append(callback)

    def cancel(self) -> None:
        """Make sure this pending handle never completes: its callbacks are dropped and the
        engine skips it when its time comes (to disarm an alarm or abandon work). It then
        reads as done with no ``time_ns``; do not wait on a cancelled handle."""
        self.callbacks = None
        self.done = True

    def _complete(self, time_ns: float) -> None:
        self.done = True
        self.time_ns = time_ns
        callbacks = self.callbacks
        if callbacks is not None:
            self.callbacks = None
            for callback in callbacks:
                callback(self)

    def __repr__(self) -> str:
        state = f"done at {self.time_ns} ns" if self.done else "pending"
        return f"<Handle {self.desc}: {state}>"


def all_of(engine: "Engine", handles, desc) -> Handle:
    """A handle that completes at the instant the last of ``handles`` completes (at once,
    in the engine's next step, if all are done already)."""
    pending = [h for h in handles if not h.done]
    joined = Handle(desc)
    if not pending:
        engine.schedule(joined, engine.now_ns)
        return joined
    remaining = [len(pending)]

    def one_done(_h):
        remaining[0] -= 1
        if remaining[0] == 0:
            engine.schedule(joined, engine.now_ns)

    for h in pending:
        h.add_callback(one_done)
    return joined


class _TimerHandle(Handle):
    """A timer's handle: made by object's C ``__init__``, no Python frame (``Engine.timer``
    sets its slots)."""

    __slots__ = ()
    __init__ = object.__init__


class Event(Handle):
    """A handle completed by user code: ``set()`` schedules its completion now.

    ``set`` only schedules; the engine completes the event on its next step, so a
    worker that sets an event never advances the clock itself (C1).
    """

    __slots__ = ("_engine", "_set_at")

    def __init__(self, engine: "Engine", desc: str):
        super().__init__(desc)
        self._engine = engine
        self._set_at: float | None = None

    def set(self, at_ns: float | None = None) -> None:
        """Complete this event at ``at_ns`` (default: the engine's current time)."""
        if self._set_at is not None:
            raise RuntimeError(f"event {self.desc!r} was already set at {self._set_at} ns")
        if at_ns is not None and not at_ns < _INF:
            raise ValueError(f"event {self.desc!r}: at_ns must be a finite time, got {at_ns!r}")
        self._set_at = self._engine.now_ns if at_ns is None else at_ns
        self._engine.schedule(self, self._set_at)


class Engine:
    """The virtual clock and event queue. SimPy-small on purpose.

    The queue is a heap of distinct times plus, per time, a list of handles in the order
    they were scheduled: the same order as a heap of ``(time, seq)`` pairs, at O(1) per
    event when many complete at one instant (as rounds of ranks do).

    Alarms (``alarm``) are timeouts: they fire when the clock passes them, but they never
    keep the simulation going on their own — with only alarms left, nothing can complete
    and ``step_instant`` returns False (so a deadlock is reported, not a timeout).
    """

    __slots__ = ("now_ns", "_times", "_due", "_alarms", "_alarm_seq", "_alarms_swept_at", "steps",
                 "reorder", "ready", "_last_ns", "_last_due")

    def __init__(self) -> None:
        self.now_ns = 0.0
        self._times: list[float] = []  # heap of the distinct times in ``_due``
        self._due: dict[float, list[Handle]] = {}
        # a bucket that timers went to (``_due[_last_ns]``; NaN when none): the timers of
        # one round's ranks are due at one instant and go there without a dict lookup
        self._last_ns = _NAN
        self._last_due: list | None = None
        self._alarms: list = []  # heap of (time, seq, handle)
        self._alarm_seq = 0
        # the heap's size at which cancelled alarms (a collective's timeout, disarmed when it
        # completes) are swept out: twice the live ones after the last sweep, so the heap
        # stays within 2x its live alarms at O(1) amortized per alarm
        self._alarms_swept_at = 64
        self.steps = 0  # instants processed; tests use it to prove a wait drove nothing
        self.reorder = None  # fn(handles) permuting an instant's completions (schedule exploration)
        # where the waiters of a completed handle go, after its callbacks (the scheduler's
        # runnable list); the handle's ``waiters`` is cleared as they move
        self.ready: list = []

    def alarm(self, handle: Handle, at_ns: float) -> Handle:
        """Complete ``handle`` at ``at_ns`` if the simulation gets there through other work."""
        if not at_ns >= self.now_ns:
            raise ValueError(f"cannot set alarm {handle.desc!r} at {at_ns} ns: the clock is at {self.now_ns} ns")
        alarms = self._alarms
        if len(alarms) >= self._alarms_swept_at:
            alarms[:] = [a for a in alarms if not a[2].done]
            heapify(alarms)  # (time, seq) keys: the same order as before the sweep
            self._alarms_swept_at = max(64, 2 * len(alarms))
        heappush(alarms, (at_ns, self._alarm_seq, handle))
        self._alarm_seq += 1
        return handle

    def schedule(self, handle: Handle, at_ns: float) -> Handle:
        """Complete ``handle`` at virtual time ``at_ns`` (>= now)."""
        if not at_ns >= self.now_ns:
            raise ValueError(
                f"cannot schedule {handle.desc!r} at {at_ns} ns: the clock is at "
                f"{self.now_ns} ns and nothing is scheduled in the virtual past"
            )
        due = self._due.get(at_ns)
        if due is None:
            self._due[at_ns] = [handle]
            heappush(self._times, at_ns)
        else:
            due.append(handle)
        return handle

    def timer(self, ns: float, desc=None) -> Handle:
        """A handle that completes ``ns`` after now. (``schedule``, inlined: the hot path.)"""
        try:
            if not 0 <= ns < _INF:  # also rejects NaN
                raise ValueError(f"timer: ns must be a finite number >= 0, got {ns!r}")
        except TypeError:
            raise TypeError(f"timer: ns must be a finite number >= 0, got {ns!r}") from None
        handle = _TimerHandle()  # Handle.__init__, inlined: no Python frame per timer
        handle.done = False
        handle.time_ns = handle.callbacks = handle.waiters = None
        handle._desc = ns if desc is None else desc
        at_ns = self.now_ns + ns
        if at_ns == self._last_ns:
            self._last_due.append(handle)
            return handle
        times = self._times
        if times:
            due = self._due.get(at_ns)
            if due is not None:  # a second timer due then: more are likely (a round of ranks)
                due.append(handle)
                self._last_ns, self._last_due = at_ns, due
                return handle
            heappush(times, at_ns)
        else:  # nothing else is scheduled (a lone task's timer): no bucket to look up
            times.append(at_ns)
        self._due[at_ns] = [handle]
        return handle

    def peek_ns(self) -> float | None:
        """Time of the next scheduled completion, or None if nothing is scheduled."""
        return self._times[0] if self._times else None

    def step_instant(self) -> bool:
        """Advance to the earliest scheduled time and complete everything due then.

        Callbacks may schedule more work at the same instant; it completes in this step
        too. Returns False if nothing was scheduled.
        """
        times = self._times
        if not times:
            return False
        now = times[0]
        alarms = self._alarms
        if alarms and alarms[0][0] <= now:
            return self._ring_alarms()
        self.now_ns = now
        self.steps += 1
        pending, ready = self._due, self.ready
        while True:  # one bucket per time; callbacks may add a bucket due now
            heappop(times)
            due = pending.pop(now)
            self._last_ns = _NAN  # a timer due now goes to a fresh bucket
            if self.reorder is not None:
                self.reorder(due)
            for handle in due:
                if handle.done:
                    continue
                handle.done = True  # Handle._complete, inlined: this is the hot path
                handle.time_ns = now
                callbacks = handle.callbacks
                if callbacks is not None:
                    handle.callbacks = None
                    for callback in callbacks:
                        callback(handle)
                waiters = handle.waiters
                if waiters is not None:
                    handle.waiters = None
                    if waiters.__class__ is list:
                        ready += waiters
                    else:
                        ready.append(waiters)
            if not times or times[0] != now:
                return True

    def _ring_alarms(self) -> bool:
        """Complete the earliest alarms (their time is at or before the next event's)."""
        alarms = self._alarms
        now = alarms[0][0]
        self.now_ns = now
        self.steps += 1
        while alarms and alarms[0][0] == now:
            handle = heappop(alarms)[2]
            if not handle.done:
                handle._complete(now)
                waiters = handle.waiters
                if waiters is not None:
                    handle.waiters = None
                    self.ready += waiters if waiters.__class__ is list else [waiters]
        return True
