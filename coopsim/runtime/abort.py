"""The abort: end every live task, whatever one raises or swallows (C4).

Invariants (docs/adr/0018-abort-and-wait-registrations.md):
- before any throw, no task holds a wait registration, so nothing but the abort resumes it;
- each live task gets ``RankAborted`` thrown until it ends, at most ``ABORT_THROWS`` times;
  what a throw raises (a ``finally`` raising ``KeyboardInterrupt``/``SystemExit``, a signal)
  is recorded as a note on the cause and the abort goes on with the next task;
- a task alive after that is discarded: never resumed again, its greenlet made immortal so
  that garbage collection never throws into it.
"""

from __future__ import annotations

import ctypes
import time

from coopsim.runtime.task import ABORTED, FINAL, RankAborted

ABORT_THROWS = 32  # throws of RankAborted before a task that swallows them is discarded


def note(error: BaseException | None, text: str) -> None:
    """Add ``text`` to ``error``'s notes (shown under its traceback), if there is an error."""
    if error is not None:
        error.__notes__ = [*getattr(error, "__notes__", ()), text]


def abort(scheduler, cause: BaseException | None = None) -> None:
    """Throw ``RankAborted`` into every live task of ``scheduler`` until it ends.

    A task whose ``finally`` block waits switches back here; the next throw raises at that
    wait, so an aborted task cannot block. With no ``cause`` (``close``), the first thing
    raised during the abort is raised once it is complete.
    """
    rt = scheduler.rt
    first = None
    for t in scheduler.live_tasks():
        scheduler.unregister(t)
    scheduler.forget_wakeups()
    for t in scheduler.live_tasks():
        g = t.greenlet
        throws = 0
        while not g.dead and throws < ABORT_THROWS:
            throws += 1
            watchdog = scheduler.watchdog  # it watches the abort too: a finally may spin
            try:
                if watchdog is not None:
                    watchdog.slice = (-throws, t, time.monotonic())
                g.throw(RankAborted(f"{t.name} aborted"))
            except BaseException as e:  # raised by the task's finally, or a signal here
                first = first or e
                note(cause, f"{t.name} raised {type(e).__name__}({e}) while being aborted; "
                            f"ignored so that the abort completes")
            finally:
                if watchdog is not None:
                    watchdog.slice = None
                scheduler.unregister(t)  # a finally that waited registered again
                rt.pending_waits.clear()
        if not g.dead:
            text = discard(scheduler, t)
            note(cause, text)
            first = first or RuntimeError(text)
        if t.state not in FINAL:
            t.state = ABORTED
    rt.tasks.clear()
    scheduler.forget_wakeups()
    scheduler.live = 0
    if cause is None and first is not None:
        raise first


def discard(scheduler, t) -> str:
    """Give up on a task that survived ``ABORT_THROWS`` throws: it is never resumed again.

    Its greenlet cannot be killed without running its code, and garbage collection would
    throw ``GreenletExit`` into it at an arbitrary time (into the same loop). So it is made
    immortal, as greenlet itself does with a greenlet that survives ``GreenletExit``: one
    reference is leaked on purpose. It stays listed in ``scheduler.discarded``; its
    ``finally`` blocks did not complete. Returns what to tell the user.
    """
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(t.greenlet))
    scheduler.discarded[t.greenlet] = t
    return (f"{t.name} swallowed the abort {ABORT_THROWS} times (a cleanup loop that catches "
            f"BaseException?); it was discarded: it will never run again and its finally "
            f"blocks did not complete")
