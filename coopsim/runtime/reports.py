"""What the scheduler reports: the exception of a round with failed tasks (C6), the deadlock
report (C7) and the watchdog's last words about the other tasks. Rank sets print as ranges
and alike failures once (``coopsim.errors.format_ranks``), so reports do not grow with N."""

from __future__ import annotations

from coopsim.errors import SpawnException, WatchdogTimeout, format_ranks
from coopsim.runtime.frames import user_location, user_location_of_traceback
from coopsim.runtime.task import BLOCKED, task_key
from coopsim.runtime.watchdog import WatchdogInterrupt


def describe_others(scheduler, busy) -> list[str]:
    """One line per live task but ``busy``, for the watchdog's last report (read from its
    thread while ``busy`` spins, so nothing here changes)."""
    rt = scheduler.rt
    lines = []
    pending = {id(t): h for t, h in list(rt.pending_waits)}  # not registered yet
    for t in sorted(list(rt.tasks.values()), key=task_key):
        if t is busy:
            continue
        h = pending.get(id(t), t.waiting)
        doing = f"waiting for {h.desc}" if h is not None and not h.done else "runnable"
        lines.append(f"{t.name}: {doing} at {user_location(t.greenlet.gr_frame) or '-'}")
    return lines


def failure(scheduler, failed: list) -> BaseException:
    """The exception a round with failed tasks raises (C6): torch's message, each distinct
    traceback once (``-- Processes [...] terminated with the same error``)."""
    busy = [t for t in failed if isinstance(t.error, WatchdogInterrupt)]
    if busy:
        t = busy[0]
        return WatchdogTimeout(t.rank, user_location_of_traceback(t.error.__traceback__),
                               scheduler.rt.watchdog_s)
    by_rank: dict = {}
    for t in sorted(failed, key=task_key):
        by_rank.setdefault(t.rank, t)
    if None in by_rank:  # a kernel launched from main failed: its own exception
        return by_rank[None].error
    ranks = sorted(by_rank)
    same: dict = {}  # trace -> ranks: 1,000 ranks failing alike print one traceback
    for r in ranks:
        same.setdefault(_trace(by_rank[r]), []).append(r)
    msg = "".join(
        f"\n\n-- Process {alike[0]} terminated with the following error:\n{trace}"
        + (f"\n\n-- Processes {format_ranks(alike[1:])} terminated with the same error "
           f"(same traceback) as process {alike[0]}" if len(alike) > 1 else "")
        for trace, alike in same.items())
    first = by_rank[ranks[0]]
    pid = first.pid or (first.owner.pid if first.owner else 0)
    return SpawnException(msg, ranks[0], pid, {r: by_rank[r].error for r in ranks})


def _trace(t) -> str:
    if t.owner is None:
        return t.trace
    return f"{t.name} raised:\n{t.trace}"


def deadlock_report(scheduler) -> dict:
    """One row per rank of the spawn and per live kernel program, then the explainers'."""
    rows = []
    spawn_ranks = scheduler.spawn.ranks if scheduler.spawn is not None else []
    programs = [t for t in scheduler.live_tasks() if t.owner is not None or t.rank is None]
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
    report = {"time_ns": scheduler.rt.engine.now_ns, "ranks": rows, "details": []}
    for explain in scheduler.rt.explainers:
        explain(report, spawn_ranks + programs)
    return report
