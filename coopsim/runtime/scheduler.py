"""The cooperative scheduler: rounds, drain, abort and deadlock detection.

One ``Scheduler`` runs one spawn. Its loop (C5):

1. **Round**: resume every runnable rank (ascending rank order, or a seeded permutation),
   each until it blocks in ``ctx.wait`` or ends. A blocking rank appends ``(rank, handle)``
   to ``ctx._pending_worker_waits`` and switches back here.
2. Register the pending waits on their handles; clear the queue.
3. **Drain**: if no rank is runnable, complete the earliest instant of the event heap
   (``Engine.step_instant``) until some completion wakes a rank. Only this loop, in the
   scheduler's greenlet, advances the virtual clock (C1).

Invariants:
- A rank is resumed only when the handle it waited on is done (C3).
- Every greenlet created here has the scheduler's greenlet as parent; when ``run`` returns
  or raises, every rank greenlet is dead and its ``finally`` blocks have run (C4).
- Nothing here reads the wall clock except the optional watchdog and ``join(timeout)``'s
  deadline, neither of which changes virtual results (C9).
"""

from __future__ import annotations

import random
import time
import traceback

from greenlet import GreenletExit, greenlet

from coopsim.errors import DeadlockError, SpawnException, WatchdogTimeout
from coopsim.runtime.frames import user_location, user_location_of_traceback
from coopsim.runtime.watchdog import Watchdog, WatchdogInterrupt

# A live rank's ``state`` stays RUNNABLE: whether it is blocked is ``waiting``'s business,
# so the hot loop writes no state. Reports derive "blocked" from a live greenlet.
NOT_STARTED, RUNNABLE, BLOCKED = "not started", "runnable", "blocked"
ENDED, FAILED, ABORTED = "ended", "failed", "aborted"
_FINAL = (ENDED, FAILED, ABORTED)


class RankAborted(GreenletExit):
    """Thrown into a rank to abort it because a sibling failed or the run was interrupted."""


class Rank:
    """One simulated process: its greenlet, its state and its virtual time."""

    __slots__ = ("rank", "pid", "greenlet", "switch", "state", "now_ns", "waiting", "error", "trace")

    def __init__(self, rank: int, pid: int, now_ns: float):
        self.rank = rank
        self.pid = pid
        self.greenlet = None
        self.switch = None  # greenlet.switch, bound once
        self.state = NOT_STARTED
        self.now_ns = now_ns
        self.waiting = None  # the Handle this rank last blocked on
        self.error: BaseException | None = None
        self.trace: str | None = None  # formatted traceback of a rank that raised


def _rank_key(r: Rank) -> int:
    return r.rank


class Scheduler:
    def __init__(self, ctx, fn, args, nprocs: int):
        self.ctx = ctx
        self.parent = greenlet.getcurrent()
        self.ranks: list[Rank] = []
        self.runnable: list[Rank] = []
        self.woken: list = []  # handles completed since the last round that ranks wait on
        self.live = nprocs
        self.outcome: BaseException | None = None  # what run() raised, once finished
        self._rng = random.Random(ctx.seed) if ctx.rank_order == "shuffled" else None
        for i in range(nprocs):
            r = Rank(i, ctx._new_pid(), ctx.engine.now_ns)
            r.greenlet = greenlet(self._body(r, fn, args), parent=self.parent)
            r.switch = r.greenlet.switch
            r.state = RUNNABLE
            ctx._ranks[r.greenlet] = r
            self.ranks.append(r)
            self.runnable.append(r)

    @staticmethod
    def _body(r: Rank, fn, args):
        def run_rank():
            try:
                fn(r.rank, *args)
            except RankAborted:
                r.state = ABORTED
            except WatchdogInterrupt as e:
                r.state, r.error = FAILED, e
            except Exception as e:
                r.state, r.error, r.trace = FAILED, e, traceback.format_exc()
            else:
                r.state = ENDED
            # any other BaseException propagates to the scheduler through greenlet

        return run_rank

    @property
    def finished(self) -> bool:
        return self.live == 0 or self.outcome is not None

    def run(self, deadline: float | None = None) -> bool:
        """Run rounds until every rank ended (True) or the wall ``deadline`` passed (False)."""
        if self.outcome is not None:
            return True
        ctx = self.ctx
        ctx._sched = self
        watchdog = Watchdog(ctx.watchdog_s, ctx._thread_id) if ctx.watchdog_s else None
        try:
            if watchdog is None:
                return self._loop(deadline, None)
            with watchdog:
                return self._loop(deadline, watchdog)
        except WatchdogInterrupt:  # landed in the scheduler itself, just after the rank yielded
            self._finish(WatchdogTimeout(watchdog.fired[1].rank, None, ctx.watchdog_s))
        except BaseException as e:  # failures, deadlock, KeyboardInterrupt, SystemExit
            self._finish(e)
        finally:
            if self.finished:
                ctx._sched = None
        raise self.outcome

    def _loop(self, deadline, watchdog) -> bool:
        ctx = self.ctx
        pending = ctx._pending_worker_waits
        step_instant = ctx.engine.step_instant
        runnable, woken = self.runnable, self.woken
        wake = woken.append  # a builtin as the handle callback: no Python frame per wake-up
        serial = 0
        while self.live:
            batch = runnable[:]
            runnable.clear()
            if self._rng is None:
                batch.sort(key=_rank_key)
            else:
                self._rng.shuffle(batch)
            failed = False
            now = ctx.engine.now_ns
            for r in batch:
                r.now_ns = now
                if watchdog is None:
                    r.switch()
                else:
                    serial += 1
                    watchdog.slice = (serial, r, time.monotonic())
                    r.switch()
                    watchdog.slice = None
                if r.greenlet.dead:
                    self.live -= 1
                    if r.state is FAILED:
                        failed = True
            for r, h in pending:
                r.waiting = h
                if h.done:
                    runnable.append(r)
                elif h.waiters is None:
                    h.waiters = [r]
                    if h.callbacks is None:  # Handle.add_callback, inlined: the hot path
                        h.callbacks = [wake]
                    else:
                        h.callbacks.append(wake)
                else:
                    h.waiters.append(r)
            pending.clear()
            if failed:
                raise self._spawn_exception()
            if not self.live:
                break
            if not runnable:
                while not woken:
                    if not step_instant():
                        raise DeadlockError(self.deadlock_report())
                for h in woken:
                    runnable += h.waiters
                    h.waiters = None
                woken.clear()
            if deadline is not None and time.monotonic() > deadline:
                return False
        ctx._ranks.clear()
        return True

    def _finish(self, error: BaseException) -> None:
        """Abort every live rank (their ``finally`` runs), then record ``error`` as the outcome."""
        self.ctx._pending_worker_waits.clear()
        self.abort()
        self.outcome = error
        self.ctx._ranks.clear()

    def abort(self) -> None:
        """Throw ``RankAborted`` into every live rank until it ends.

        A rank whose ``finally`` block waits switches back here; the next throw raises at
        that wait, so an aborted rank cannot block.
        """
        for r in self.ranks:
            g = r.greenlet
            for _ in range(100):
                if g.dead:
                    break
                g.throw(RankAborted(f"rank {r.rank} aborted"))
            if r.state not in _FINAL:
                r.state = ABORTED
        self.live = 0

    def _spawn_exception(self) -> BaseException:
        failed = [r for r in self.ranks if r.state is FAILED]
        busy = [r for r in failed if isinstance(r.error, WatchdogInterrupt)]
        if busy:
            r = busy[0]
            return WatchdogTimeout(r.rank, user_location_of_traceback(r.error.__traceback__),
                                   self.ctx.watchdog_s)
        msg = "".join(
            f"\n\n-- Process {r.rank} terminated with the following error:\n{r.trace}" for r in failed
        )
        first = failed[0]
        return SpawnException(msg, first.rank, first.pid, {r.rank: r.error for r in failed})

    def deadlock_report(self) -> dict:
        rows = []
        for r in self.ranks:
            blocked = not r.greenlet.dead  # at a deadlock every live rank is blocked
            frame = r.greenlet.gr_frame if blocked else None
            rows.append({
                "rank": r.rank,
                "state": BLOCKED if blocked else r.state,
                "waits_for": r.waiting.desc if blocked else None,
                "time_ns": r.now_ns,
                "where": user_location(frame) if frame is not None else None,
            })
        return {"time_ns": self.ctx.engine.now_ns, "ranks": rows}
