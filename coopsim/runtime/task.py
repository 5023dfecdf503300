"""What the scheduler runs: ``Task`` (one greenlet: a rank or a kernel program), its states,
the body that records how it ended, and ``Spawn`` (the ranks of one ``spawn`` call)."""

from __future__ import annotations

import traceback
from operator import attrgetter

from greenlet import GreenletExit

from coopsim.runtime.watchdog import WatchdogInterrupt

# A live task's ``state`` stays RUNNABLE: whether it is blocked is ``waiting``'s business,
# so the hot loop writes no state. Reports derive "blocked" from a live greenlet.
RUNNABLE, BLOCKED, ENDED, FAILED, ABORTED = "runnable", "blocked", "ended", "failed", "aborted"
FINAL = (ENDED, FAILED, ABORTED)


class RankAborted(GreenletExit):
    """Thrown into a task to abort it because a sibling failed or the run was interrupted."""


class Task:
    """One greenlet the scheduler runs: a rank, or a program instance of a kernel.

    ``rank`` is the rank's number (for a program: its launching rank's, None from main);
    ``key`` orders tasks in a round; ``owner`` is the launching rank's task for a program.
    """

    __slots__ = ("name", "rank", "key", "pid", "owner", "device", "greenlet", "switch", "state",
                 "now_ns", "waiting", "error", "trace", "on_end", "fn", "args", "started")

    def __init__(self, name: str, rank, key: tuple, now_ns: float, owner=None, on_end=None,
                 device: int = 0):
        self.name = name
        self.rank = rank
        self.key = key
        self.pid = 0
        self.owner = owner
        self.device = device  # index of the task's current device (torch.cuda.set_device)
        self.greenlet = None
        self.switch = None  # greenlet.switch, bound once
        self.state = RUNNABLE
        self.now_ns = now_ns
        self.waiting = None  # the Handle this task is registered on (C3: at most one)
        self.error: BaseException | None = None
        self.trace: str | None = None  # formatted traceback of a task that raised
        self.on_end = on_end  # called with the task when it ends normally
        self.fn = self.args = None  # what the greenlet runs (``body``)
        # set when its greenlet starts: only the scheduler starts a task, from its own stack,
        # so that every task's stack begins at the same depth (Runtime.wait hands a round on
        # to started tasks only; a task started from another's stack would nest below it)
        self.started = False

    def run(self) -> "Task":
        """The greenlet's run: ``fn(*args)``, its outcome recorded on the task; returns the
        task, which its parent, the scheduler, receives (a round's task may have been resumed
        by another task's wait, so the scheduler learns from this which one ended)."""
        task = self  # the outermost frame's ``task``: how testing/plugin.py names a leaked greenlet
        task.started = True
        args = task.args
        try:
            if len(args) == 2:  # spawn's fn(rank, ctx): a direct call, unlike fn(*args), adds no
                task.fn(args[0], args[1])  # C frame to the stack a suspended rank keeps (~0.4 KB)
            else:
                task.fn(*args)
        except RankAborted:
            task.state = ABORTED
        except WatchdogInterrupt as e:
            task.state, task.error = FAILED, e
        except Exception as e:
            task.state, task.error, task.trace = FAILED, e, traceback.format_exc()
        else:
            task.state = ENDED
        # any other BaseException propagates to the scheduler through greenlet
        return task  # to the scheduler (the greenlet's parent): which task of the round ended


task_key = attrgetter("key")  # Task -> its round order key (a C call: rounds sort by it)


def body(task: Task, fn, args):
    """The greenlet's run for ``fn(*args)`` on ``task`` (a bound method: no closure per task)."""
    task.fn, task.args = fn, args
    return task.run


class Spawn:
    """The ranks of one ``spawn`` call and how it ended."""

    def __init__(self, ranks: list[Task]):
        self.ranks = ranks
        self.outcome: BaseException | None = None
        self.finished = False
        self.state: dict = {}  # per-spawn slots of the layers above (Runtime.spawn_state)
