"""The cooperative scheduler: rounds, drain, abort and deadlock detection.

A context has one ``Scheduler``. Its tasks are greenlets: the ranks of a spawn and the
program instances of launched kernels. Its loop (C5):

1. **Round**: resume every runnable task in a deterministic order (ranks ascending, each
   rank's programs after it; or a seeded permutation), each until it blocks in
   ``ctx.wait`` or ends. A blocking task appends ``(task, handle)`` to
   ``runtime.pending_waits`` and switches back here.
2. Register the pending waits on their handles; clear the queue.
3. **Drain**: if no task is runnable, complete the earliest instant of the event queue
   (``Engine.step_instant``), until a completion wakes a task or the run's goal is met.
   Only this loop, in the scheduler's greenlet, advances the virtual clock (C1).

Invariants:
- A task is resumed only when the handle it waited on is done (C3); while any task runs,
  its virtual time is the engine's ``now_ns``.
- A task has at most one live wait registration (``Task.waiting``); delivering an error
  removes it before the task's code runs (``_unregister``, C3).
- Every greenlet created here has the scheduler's greenlet as parent; when a spawn
  returns or raises, every task greenlet is dead and its ``finally`` blocks have run (C4),
  except a task that swallowed ``ABORT_THROWS`` aborts: it is discarded, never to run again
  (docs/adr/0018-abort-and-wait-registrations.md). The abort completes whatever a task
  raises during it; the original exception propagates.
- Nothing here reads the wall clock except the optional watchdog and ``join(timeout)``'s
  deadline, neither of which changes virtual results (C9).
"""

from __future__ import annotations

import ctypes
import random
import sys
import time
import traceback

from greenlet import GreenletExit, greenlet

from coopsim.errors import DeadlockError, SpawnException, WatchdogTimeout, format_ranks
from coopsim.runtime.frames import user_location, user_location_of_traceback
from coopsim.runtime.watchdog import Watchdog, WatchdogInterrupt

# A live task's ``state`` stays RUNNABLE: whether it is blocked is ``waiting``'s business,
# so the hot loop writes no state. Reports derive "blocked" from a live greenlet.
RUNNABLE, BLOCKED, ENDED, FAILED, ABORTED = "runnable", "blocked", "ended", "failed", "aborted"
_FINAL = (ENDED, FAILED, ABORTED)


ABORT_THROWS = 32  # throws of RankAborted before a task that swallows them is discarded


def _note(error: BaseException | None, note: str) -> None:
    """Add ``note`` to ``error``'s notes (shown under its traceback), if there is an error."""
    if error is not None:
        error.__notes__ = [*getattr(error, "__notes__", ()), note]


class RankAborted(GreenletExit):
    """Thrown into a task to abort it because a sibling failed or the run was interrupted."""


class Task:
    """One greenlet the scheduler runs: a rank, or a program instance of a kernel.

    ``rank`` is the rank's number (for a program: its launching rank's, None from main);
    ``key`` orders tasks in a round; ``owner`` is the launching rank's task for a program.
    """

    __slots__ = ("name", "rank", "key", "pid", "owner", "device", "greenlet", "switch", "state",
                 "now_ns", "waiting", "error", "trace", "on_end")

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
        self.waiting = None  # the Handle this task last blocked on
        self.error: BaseException | None = None
        self.trace: str | None = None  # formatted traceback of a task that raised
        self.on_end = on_end  # called with the task when it ends normally


def _task_key(t: Task) -> tuple:
    return t.key


def _body(task: Task, fn, args):
    def run_task():
        try:
            fn(*args)
        except RankAborted:
            task.state = ABORTED
        except WatchdogInterrupt as e:
            task.state, task.error = FAILED, e
        except Exception as e:
            task.state, task.error, task.trace = FAILED, e, traceback.format_exc()
        else:
            task.state = ENDED
        # any other BaseException propagates to the scheduler through greenlet

    return run_task


class Spawn:
    """The ranks of one ``spawn`` call and how it ended."""

    def __init__(self, ranks: list[Task]):
        self.ranks = ranks
        self.outcome: BaseException | None = None
        self.finished = False
        self.state: dict = {}  # per-spawn slots of the layers above (Runtime.spawn_state)


class Scheduler:
    """The loop of one ``Runtime`` (the port that owns it, ``rt``)."""

    def __init__(self, rt):
        self.rt = rt
        self.parent = None  # the greenlet that drives the loop and parents every task
        self.to_scheduler = None  # parent.switch, bound once: how a blocking task yields
        self.runnable: list[Task] = []
        self.woken: list = []  # handles completed since the last round that tasks wait on
        self.interrupts: list = []  # (task, exception) to raise in blocked tasks next round
        self.live = 0
        self.spawn: Spawn | None = None  # the spawn being run, until it finishes
        self.watchdog = None  # the running Watchdog, while ``run`` runs with one
        self.discarded: dict = {}  # greenlet -> Task: tasks that refused to end (``_discard``)
        self._rng = random.Random(rt.seed) if rt.rank_order == "shuffled" else None

    def _claim_parent(self) -> None:
        current = greenlet.getcurrent()
        if self.live == 0:
            self.parent = current
            self.to_scheduler = current.switch
        elif current is not self.parent:
            raise RuntimeError(
                "coopsim tasks are running with another greenlet as their scheduler; drive "
                "the simulation from the greenlet that started it"
            )

    def add_task(self, task: Task, fn, args=()) -> Task:
        """Make ``fn(*args)`` a runnable task (its greenlet's parent is the scheduler's)."""
        if self.parent is None or self.live == 0:
            self._claim_parent()
        task.greenlet = greenlet(_body(task, fn, args), parent=self.parent)
        task.switch = task.greenlet.switch
        self.rt.tasks[task.greenlet] = task
        self.runnable.append(task)
        self.live += 1
        return task

    def interrupt(self, task: Task, error: BaseException) -> None:
        """Raise ``error`` in ``task`` — blocked in ``ctx.wait`` — at that wait, next round.

        For failures that concern several ranks at once (a collective mismatch, a timeout):
        each of them raises on its own, so each is a root cause (C6). The task may still be
        in the current round's batch; its registration is removed when the error is
        delivered (``_unregister``), before its user code runs (C3).
        """
        self.interrupts.append((task, error))

    def _unregister(self, t: Task) -> None:
        """Remove every wait registration of ``t``: on its handle, in ``pending_waits``
        and in the runnable list. After this, nothing but a throw can resume ``t`` (C3)."""
        h = t.waiting
        t.waiting = None
        if h is not None:
            waiters = h.waiters
            if waiters is t:
                h.waiters = None
            elif waiters.__class__ is list and t in waiters:
                waiters[:] = [w for w in waiters if w is not t]
        pending = self.rt.pending_waits
        if pending and any(p[0] is t for p in pending):
            pending[:] = [p for p in pending if p[0] is not t]
        if t in self.runnable:
            self.runnable[:] = [r for r in self.runnable if r is not t]

    def start_spawn(self, fn, args, nprocs: int) -> Spawn:
        rt = self.rt
        self._claim_parent()
        ranks = []
        for i in range(nprocs):
            task = Task(f"rank {i}", i, (i,), rt.engine.now_ns, device=i)
            task.pid = rt.new_pid()
            ranks.append(self.add_task(task, fn, (i, *args)))
        self.spawn = Spawn(ranks)
        return self.spawn

    def join_spawn(self, deadline: float | None = None) -> bool:
        """Run the spawn until every task ended (True) or the wall ``deadline`` passed (False)."""
        spawn = self.spawn
        if spawn is None:
            return True
        try:
            done = self.run(lambda: self.live == 0, deadline)
        except BaseException as e:  # failures, deadlock, watchdog, KeyboardInterrupt, SystemExit
            self._finish_spawn(e)
            raise
        if done:
            self._finish_spawn(None)
        return done

    def _finish_spawn(self, outcome) -> None:
        self.spawn.outcome = outcome
        self.spawn.finished = True
        self.spawn = None

    def run(self, goal, deadline: float | None = None) -> bool:
        """Rounds and drains until ``goal()`` holds (True) or the wall deadline passed (False).

        Raises SpawnException / WatchdogTimeout / DeadlockError / a BaseException, after
        aborting every live task.
        """
        self._claim_parent()
        rt = self.rt
        watchdog = self.watchdog = (
            Watchdog(rt.watchdog_s, rt.thread_id, rt.watchdog_grace_s, self._describe_others)
            if rt.watchdog_s else None)
        if watchdog is None:
            return self._run(goal, deadline, None)
        try:
            with watchdog:  # it watches the abort too: a finally may spin
                return self._run(goal, deadline, watchdog)
        finally:
            self.watchdog = None

    def _run(self, goal, deadline, watchdog) -> bool:
        try:
            return self._loop(goal, deadline, watchdog)
        except WatchdogInterrupt:  # landed in the scheduler itself, just after the task yielded
            error = WatchdogTimeout(watchdog.fired[1].rank, None, self.rt.watchdog_s)
        except BaseException as e:
            error = e
        self.abort(error)
        raise error

    def _loop(self, goal, deadline, watchdog) -> bool:
        rt = self.rt
        pending = rt.pending_waits
        engine = rt.engine
        step_instant = engine.step_instant
        runnable, woken = self.runnable, self.woken
        wake = woken.append  # a builtin as the handle callback: no Python frame per wake-up
        serial = 0
        while not goal():
            if self.interrupts:
                failed = self._deliver_interrupts([])
                if failed:
                    raise self._failure(failed)
                continue
            if runnable:
                batch = runnable[:]
                runnable.clear()
                if self._rng is None:
                    batch.sort(key=_task_key)
                else:
                    self._rng.shuffle(batch)
                failed = None
                now = engine.now_ns
                for t in batch:
                    t.now_ns = now
                    if watchdog is None:
                        blocked = t.switch()
                    else:
                        serial += 1
                        watchdog.slice = (serial, t, time.monotonic())
                        blocked = t.switch()
                        watchdog.slice = None
                    if blocked is not True:  # a blocking task switches back True; an ended one, None
                        self._ended(t)
                        if t.state is FAILED:
                            failed = failed or []
                            failed.append(t)
                        elif t.on_end is not None:
                            t.on_end(t)
                for t, h in pending:  # _register_pending, inlined: the hot path
                    t.waiting = h
                    waiters = h.waiters
                    if h.done:
                        runnable.append(t)
                    elif waiters is None:  # the usual case: one waiter, stored bare
                        h.waiters = t
                        if h.callbacks is None:  # Handle.add_callback, inlined: the hot path
                            h.callbacks = [wake]
                        else:
                            h.callbacks.append(wake)
                    elif waiters.__class__ is list:
                        waiters.append(t)
                    else:
                        h.waiters = [waiters, t]
                pending.clear()
                if failed:
                    if self.interrupts:  # siblings failed by the same event fail in this round too
                        self._deliver_interrupts(failed)
                    raise self._failure(failed)
                if deadline is not None and time.monotonic() > deadline:
                    return False
                continue
            if not step_instant():
                raise DeadlockError(self.deadlock_report())
            if woken:
                for h in woken:
                    waiters = h.waiters
                    if waiters is None:  # its waiter was interrupted
                        continue
                    if waiters.__class__ is list:
                        runnable += waiters
                    else:
                        runnable.append(waiters)
                    h.waiters = None
                woken.clear()
        return True

    def _deliver_interrupts(self, failed: list) -> list:
        """Throw the pending interrupts; the tasks that fail by them join ``failed``.

        Each throw first removes the task's registration, so a task that catches the error
        and waits again holds exactly one registration: the new one (C3)."""
        interrupts = sorted(self.interrupts, key=lambda item: item[0].key)
        self.interrupts.clear()
        for t, error in interrupts:
            if t.greenlet.dead or t.state in _FINAL:
                continue
            self._unregister(t)
            if t.greenlet.throw(error) is not True:
                self._ended(t)
                if t.state is FAILED:
                    failed.append(t)
        self._register_pending()  # tasks that caught the error and wait again
        return failed

    def _register_pending(self) -> None:
        """Move ``runtime.pending_waits`` onto their handles (``_loop`` inlines this)."""
        pending = self.rt.pending_waits
        for t, h in pending:
            t.waiting = h
            if h.done:
                self.runnable.append(t)
            elif h.waiters is None:
                h.waiters = t
                h.add_callback(self.woken.append)
            elif h.waiters.__class__ is list:
                h.waiters.append(t)
            else:
                h.waiters = [h.waiters, t]
        pending.clear()

    def _ended(self, t: Task) -> None:
        self.live -= 1
        del self.rt.tasks[t.greenlet]

    def live_tasks(self) -> list[Task]:
        """The live tasks in round order (``runtime.tasks`` holds them, keyed by greenlet)."""
        return sorted(self.rt.tasks.values(), key=_task_key)

    def abort(self, cause: BaseException | None = None) -> None:
        """Throw ``RankAborted`` into every live task until it ends (C4).

        A task whose ``finally`` block waits switches back here; the next throw raises at
        that wait, so an aborted task cannot block. The abort completes for every task
        whatever one raises during it (a second Ctrl-C, SystemExit, an error): those are
        recorded as notes on ``cause``, which is what the caller re-raises. A task still
        alive after ``ABORT_THROWS`` throws swallows the abort in a loop: it is discarded
        (``_discard``; docs/adr/0018-abort-and-wait-registrations.md). With no ``cause``
        (``close``), the first of those is raised once the abort is complete.
        """
        rt = self.rt
        first = None
        for t in self.live_tasks():
            self._unregister(t)
        self.runnable.clear()
        self.interrupts.clear()
        rt.pending_waits.clear()
        for h in self.woken:
            h.waiters = None
        self.woken.clear()
        for t in self.live_tasks():
            g = t.greenlet
            throws = 0
            while not g.dead and throws < ABORT_THROWS:
                throws += 1
                try:
                    if self.watchdog is not None:
                        self.watchdog.slice = (-throws, t, time.monotonic())
                    g.throw(RankAborted(f"{t.name} aborted"))
                except BaseException as e:  # raised by the task's finally, or a signal here
                    first = first or e
                    _note(cause, f"{t.name} raised {type(e).__name__}({e}) while being aborted; "
                                 f"ignored so that the abort completes")
                finally:
                    if self.watchdog is not None:
                        self.watchdog.slice = None
                    self._unregister(t)  # a finally that waited registered again
                    rt.pending_waits.clear()
            if not g.dead:
                note = self._discard(t, cause)
                first = first or RuntimeError(note)
            if t.state not in _FINAL:
                t.state = ABORTED
        rt.tasks.clear()
        self.runnable.clear()
        self.interrupts.clear()
        rt.pending_waits.clear()
        self.live = 0
        if cause is None and first is not None:
            raise first

    def _discard(self, t: Task, cause) -> str:
        """Give up on a task that survived ``ABORT_THROWS`` throws: it is never resumed again.

        Its greenlet cannot be killed without running its code, and garbage collection
        would throw ``GreenletExit`` into it at an arbitrary time (into the same loop). So
        it is made immortal, as greenlet itself does with a greenlet that survives
        ``GreenletExit``: one reference is leaked on purpose. It stays listed in
        ``discarded``; its ``finally`` blocks did not complete.
        """
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(t.greenlet))
        self.discarded[t.greenlet] = t
        note = (f"{t.name} swallowed the abort {ABORT_THROWS} times (a cleanup loop that catches "
                f"BaseException?); it was discarded: it will never run again and its finally "
                f"blocks did not complete")
        _note(cause, note)
        return note

    def _describe_others(self, busy: Task) -> list[str]:
        """One line per other live task, for the watchdog's last report (read from its
        thread while ``busy`` spins, so nothing here changes)."""
        lines = []
        pending = {id(t): h for t, h in list(self.rt.pending_waits)}  # not registered yet
        for t in sorted(list(self.rt.tasks.values()), key=_task_key):
            if t is busy:
                continue
            h = pending.get(id(t), t.waiting)
            doing = f"waiting for {h.desc}" if h is not None and not h.done else "runnable"
            lines.append(f"{t.name}: {doing} at {user_location(t.greenlet.gr_frame) or '-'}")
        return lines

    def _failure(self, failed: list[Task]) -> BaseException:
        """The exception a round with failed tasks raises (C6)."""
        busy = [t for t in failed if isinstance(t.error, WatchdogInterrupt)]
        if busy:
            t = busy[0]
            return WatchdogTimeout(t.rank, user_location_of_traceback(t.error.__traceback__),
                                   self.rt.watchdog_s)
        by_rank: dict = {}
        for t in sorted(failed, key=_task_key):
            by_rank.setdefault(t.rank, t)
        if None in by_rank:  # a kernel launched from main failed: its own exception
            return by_rank[None].error
        ranks = sorted(by_rank)
        same: dict = {}  # trace -> ranks: 1,000 ranks failing alike print one traceback
        for r in ranks:
            same.setdefault(self._trace(by_rank[r]), []).append(r)
        msg = "".join(
            f"\n\n-- Process {alike[0]} terminated with the following error:\n{trace}"
            + (f"\n\n-- Processes {format_ranks(alike[1:])} terminated with the same error "
               f"(same traceback) as process {alike[0]}" if len(alike) > 1 else "")
            for trace, alike in same.items())
        first = by_rank[ranks[0]]
        pid = first.pid or (first.owner.pid if first.owner else 0)
        return SpawnException(msg, ranks[0], pid, {r: by_rank[r].error for r in ranks})

    @staticmethod
    def _trace(t: Task) -> str:
        if t.owner is None:
            return t.trace
        return f"{t.name} raised:\n{t.trace}"

    def deadlock_report(self) -> dict:
        rows = []
        spawn_ranks = self.spawn.ranks if self.spawn is not None else []
        programs = [t for t in self.live_tasks() if t.owner is not None or t.rank is None]
        for t in spawn_ranks + programs:
            blocked = not t.greenlet.dead  # at a deadlock every live task is blocked
            frame = t.greenlet.gr_frame if blocked else None
            rows.append({
                "rank": t.rank,
                "task": t.name,
                "state": BLOCKED if blocked else t.state,
                "waits_for": t.waiting.desc if blocked and t.waiting is not None else None,
                "time_ns": t.now_ns,
                "where": user_location(frame) if frame is not None else None,
            })
        report = {"time_ns": self.rt.engine.now_ns, "ranks": rows, "details": []}
        for explain in self.rt.explainers:
            explain(report, spawn_ranks + programs)
        return report

    def drive_until(self, handle):
        """Main's wait: run rounds (kernel programs) and drains until ``handle`` is done."""
        if self.spawn is not None:
            raise RuntimeError(
                "wait called from main while a spawn started with join=False is running: "
                "its ranks only progress inside ProcessContext.join(); call join() instead"
            )
        try:
            self.run(lambda: handle.done)
        except DeadlockError as e:
            e.report["ranks"].insert(0, {
                "rank": None, "task": "main", "state": "blocked", "waits_for": handle.desc,
                "time_ns": self.rt.engine.now_ns, "where": user_location(sys._getframe(1)),
            })
            raise DeadlockError(e.report) from None
        return handle

    def close(self) -> None:
        """Abort every live task (a spawn never joined to the end, kernel programs never
        waited for); their ``finally`` blocks run. What one raises during it is raised
        after the abort is complete."""
        try:
            self.abort()
        finally:
            if self.spawn is not None:
                self._finish_spawn(None)
