"""The cooperative scheduler: rounds, drain, abort and deadlock detection.

A context has one ``Scheduler``. Its tasks are greenlets: the ranks of a spawn and the
program instances of launched kernels. Its loop (C5):

1. **Round**: resume every runnable task in a deterministic order (ranks ascending, each
   rank's programs after it; or a seeded permutation), each until it blocks in
   ``ctx.wait`` or ends. A blocking task appends ``(task, handle)`` to
   ``runtime.pending_waits`` and hands the round on: it resumes the round's next task
   itself if that task has started (``batch[next]``), else switches back here, which
   starts it or ends the round (docs/adr/0032-round-handoff.md). A task that ends returns
   here, with itself, and the round goes on from ``next``.
2. Register the pending waits on their handles; clear the queue.
3. **Drain**: if no task is runnable, complete the earliest instant of the event queue
   (``Engine.step_instant``, which moves the waiters of a completed handle onto the runnable
   list), until a completion wakes a task or the run's goal is met.
   Only this loop, in the scheduler's greenlet, advances the virtual clock (C1).

Invariants:
- A task is resumed only when the handle it waited on is done (C3); while any task runs,
  its virtual time is the engine's ``now_ns``.
- A task has at most one live wait registration (``Task.waiting``); delivering an error
  removes it before the task's code runs (``unregister``, C3).
- Every greenlet created here has the scheduler's greenlet as parent; when a spawn
  returns or raises, every task greenlet is dead and its ``finally`` blocks have run (C4),
  except a task that swallowed ``ABORT_THROWS`` aborts: it is discarded, never to run again
  (docs/adr/0018-abort-and-wait-registrations.md). The abort completes whatever a task
  raises during it; the original exception propagates.
- Nothing here reads the wall clock except the optional watchdog and ``join(timeout)``'s
  deadline, neither of which changes virtual results (C9).
"""

from __future__ import annotations

import functools
import random
import sys
import time

from greenlet import greenlet

from coopsim.errors import DeadlockError, WatchdogTimeout
from coopsim.runtime import reports
from coopsim.runtime.abort import abort
from coopsim.runtime.frames import user_location
from coopsim.runtime.gcpause import gc_paused
from coopsim.runtime.task import (  # noqa: F401 - re-exported: the runtime's task vocabulary
    ABORTED, BLOCKED, ENDED, FAILED, FINAL, RUNNABLE, RankAborted, Spawn, Task, body, task_key)
from coopsim.runtime.watchdog import Watchdog, WatchdogInterrupt

ROUND_END = Task("end of round", None, (), 0.0)  # never started: a wait before it returns here
IDLE = (ROUND_END,)  # the batch between rounds: every wait switches to the scheduler


class Scheduler:
    """The loop of one ``Runtime`` (the port that owns it, ``rt``)."""

    def __init__(self, rt):
        self.rt = rt
        self.parent = None  # the greenlet that drives the loop and parents every task
        self.to_scheduler = None  # parent.switch, bound once: how a blocking task yields
        self.runnable: list[Task] = rt.engine.ready  # the engine appends the tasks its completions wake
        self.interrupts: list = []  # (task, exception) to raise in blocked tasks next round
        self.live = 0
        self.spawn: Spawn | None = None  # the spawn being run, until it finishes
        self.watchdog = None  # the running Watchdog, while ``run`` runs with one
        self.discarded: dict = {}  # greenlet -> Task: tasks that refused to end (abort.discard)
        self._rng = random.Random(rt.seed) if rt.rank_order == "shuffled" else None
        # the running round: its tasks in order, then ``ROUND_END``, and the index of the next
        # one to resume; a task that blocks resumes that one itself if it has started
        # (``Runtime.wait``). Between rounds ``batch`` is ``IDLE`` and ``next`` 0.
        self.batch: list | tuple = IDLE
        self.next = 0

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
        task.greenlet = greenlet(body(task, fn, args), parent=self.parent)
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
        delivered (``unregister``), before its user code runs (C3).
        """
        self.interrupts.append((task, error))

    def unregister(self, t: Task) -> None:
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
        for hook in rt.spawn_hooks:  # e.g. fault injection arms its timed faults
            hook(self.spawn)
        return self.spawn

    def join_spawn(self, deadline: float | None = None) -> bool:
        """Run the spawn until every task ended (True) or the wall ``deadline`` passed (False)."""
        spawn = self.spawn
        if spawn is None:
            return True
        try:
            done = self.run(None, deadline)
            if done:
                for check in self.rt.spawn_checks:  # e.g. ops left that can never complete
                    check()
        except BaseException as e:  # failures, deadlock, watchdog, KeyboardInterrupt, SystemExit
            self._finish_spawn(e)
            raise
        if done:
            self._finish_spawn(None)
        return done

    def _finish_spawn(self, outcome) -> None:
        for cleanup in self.rt.spawn_cleanups:
            cleanup(outcome)
        self.spawn.outcome = outcome
        self.spawn.finished = True
        self.spawn = None

    def run(self, goal, deadline: float | None = None) -> bool:
        """Rounds and drains until ``goal()`` holds (True) or the wall deadline passed (False);
        ``goal`` None: until every task has ended (checked inline: the hot loop's test).

        Raises SpawnException / WatchdogTimeout / DeadlockError / a BaseException, after
        aborting every live task.
        """
        self._claim_parent()
        rt = self.rt
        watchdog = self.watchdog = (
            Watchdog(rt.watchdog_s, rt.thread_id, rt.watchdog_grace_s,
                     functools.partial(reports.describe_others, self))
            if rt.watchdog_s else None)
        with gc_paused():
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
        self.batch, self.next = IDLE, 0  # a round cut short: no wait hands on to its other tasks
        for hook in self.rt.error_hooks:  # e.g. the flight recorder attaches its record
            hook(error)
        abort(self, error)
        raise error

    def _loop(self, goal, deadline, watchdog) -> bool:
        rt = self.rt
        pending = rt.pending_waits
        engine = rt.engine
        step_instant = engine.step_instant
        runnable = self.runnable
        serial = 0
        while self.live if goal is None else not goal():
            if self.interrupts:
                failed = self._deliver_interrupts([])
                if failed:
                    raise reports.failure(self, failed)
                continue
            if runnable:
                batch = runnable[:]
                runnable.clear()
                if rt.strategy is not None:  # schedule exploration (coopsim.testing)
                    rt.strategy.round(batch)
                elif len(batch) > 1:  # (shuffling one task draws nothing from the rng)
                    if self._rng is None:
                        batch.sort(key=task_key)
                    else:
                        self._rng.shuffle(batch)
                failed = None
                now = engine.now_ns
                if len(batch) == 1 and watchdog is None:  # nobody to hand on to: wait returns here
                    t = batch[0]
                    if goal is None and deadline is None:
                        ended = self._lone_rounds(t)
                    else:
                        t.now_ns = now
                        ended = t.switch()
                    if ended is not True:
                        failed = self._ended_in_round(ended, failed)
                elif watchdog is None:
                    i, n = 0, len(batch)
                    batch.append(ROUND_END)
                    self.batch = batch
                    while i < n:
                        t = batch[i]
                        self.next = i + 1
                        t.now_ns = now
                        ended = t.switch()  # True: the round's last task blocked; else a Task that ended
                        if ended is not True:
                            failed = self._ended_in_round(ended, failed)
                        i = self.next
                    self.batch, self.next = IDLE, 0
                else:
                    for t in batch:
                        t.now_ns = now
                        serial += 1
                        watchdog.slice = (serial, t, time.monotonic())
                        blocked = t.switch()
                        watchdog.end_slice()
                        if blocked is not True:
                            failed = self._ended_in_round(t, failed)
                for t, h in pending:  # _register_pending, inlined: the hot path
                    t.waiting = h
                    waiters = h.waiters
                    if h.done:
                        runnable.append(t)
                    elif waiters is None:  # the usual case: one waiter, stored bare (the engine wakes it)
                        h.waiters = t
                    elif waiters.__class__ is list:
                        waiters.append(t)
                    else:
                        h.waiters = [waiters, t]
                pending.clear()
                if failed:
                    if self.interrupts:  # siblings failed by the same event fail in this round too
                        self._deliver_interrupts(failed)
                    raise reports.failure(self, failed)
                if deadline is not None and time.monotonic() > deadline:
                    return False
                continue
            if not step_instant():
                raise DeadlockError(self.deadlock_report())
        return True

    def _lone_rounds(self, t: Task):
        """Run the round of one task ``t`` and, while nothing else happens, its wait's
        registration, the drain and the next round of one, with none of the general loop's
        checks: for a spawn with no goal but its end and no deadline
        (docs/adr/0035-lone-task-rounds.md).

        The rounds go on here only while each is the whole story: the task blocked with one
        pending wait, on a pending handle nobody else waits on; no interrupt is queued before
        a drain; the drain wakes exactly one task; no schedule strategy is set. Anything else
        returns, leaving what the general loop expects after a round (the round's pending
        queue untouched, or registered and drained up to that point), and it goes on as it
        would have. Returns what the last switch returned (True: the task blocked)."""
        rt = self.rt
        pending = rt.pending_waits
        runnable = self.runnable
        engine = rt.engine
        step_instant = engine.step_instant
        interrupts = self.interrupts
        while True:
            t.now_ns = engine.now_ns
            ended = t.switch()
            try:
                [(_, h)] = pending  # the task's own wait (nobody else ran)
            except ValueError:  # none: the task ended
                return ended
            if ended is not True or h.done or h.waiters is not None:
                return ended
            pending.clear()  # the registration (C3), as the general loop makes it
            t.waiting = h
            h.waiters = t
            while not runnable:  # the drain (unless the round made tasks runnable)
                if interrupts or not step_instant():  # the general loop delivers them, or
                    return True  # finds nothing to complete either: a deadlock
            if interrupts or rt.strategy is not None:
                return True
            try:
                [t] = runnable  # the next round is of one task too
            except ValueError:
                return True
            runnable.clear()

    def _ended_in_round(self, t: Task, failed: list | None) -> list | None:
        """Account for ``t``, which ended in a round; returns ``failed`` with ``t`` if it failed."""
        self._ended(t)
        if t.state is FAILED:
            return [*(failed or ()), t]
        if t.on_end is not None:
            t.on_end(t)
        return failed

    def _deliver_interrupts(self, failed: list) -> list:
        """Throw the pending interrupts; the tasks that fail by them join ``failed``.

        Each throw first removes the task's registration, so a task that catches the error
        and waits again holds exactly one registration: the new one (C3)."""
        interrupts = sorted(self.interrupts, key=lambda item: item[0].key)
        self.interrupts.clear()
        for t, error in interrupts:
            if t.greenlet.dead or t.state in FINAL:
                continue
            self.unregister(t)
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
                h.waiters = t  # the engine moves it to ``runnable`` when ``h`` completes
            elif h.waiters.__class__ is list:
                h.waiters.append(t)
            else:
                h.waiters = [h.waiters, t]
        pending.clear()

    def _ended(self, t: Task) -> None:
        self.live -= 1
        del self.rt.tasks[t.greenlet]

    def forget_wakeups(self) -> None:
        """Drop every queued resumption: runnable tasks, pending interrupts and waits (the
        abort's first and last step)."""
        self.runnable.clear()
        self.interrupts.clear()
        self.rt.pending_waits.clear()

    def deadlock_report(self) -> dict:
        return reports.deadlock_report(self)

    def live_tasks(self) -> list[Task]:
        """The live tasks in round order (``runtime.tasks`` holds them, keyed by greenlet)."""
        return sorted(self.rt.tasks.values(), key=task_key)

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
            abort(self)
        finally:
            if self.spawn is not None:
                self._finish_spawn(None)
