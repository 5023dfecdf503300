"""coopsim's exceptions.

``ProcessException`` / ``ProcessRaisedException`` mirror ``torch.multiprocessing``
(``msg``, ``error_index``, ``pid``); the others are what a simulator can say that a real
process group cannot: that no rank can ever progress, or that one never yields.
"""

from __future__ import annotations

import re


class ProcessException(Exception):
    """Base of spawn's failures, as in ``torch.multiprocessing.ProcessException``."""

    def __init__(self, msg: str, error_index: int, pid: int):
        super().__init__(msg)
        self.msg = msg
        self.error_index = error_index
        self.pid = pid

    def __reduce__(self):
        return type(self), (self.msg, self.error_index, self.pid)


class ProcessRaisedException(ProcessException):
    """A rank raised an exception (torch: the child's traceback is in the message)."""


class ProcessExitedException(ProcessException):
    """A rank died by a signal or an exit code, as ``torch.multiprocessing``'s (a rank killed
    by ``ctx.sim.faults``: ``process 2 terminated with signal SIGKILL``); ``exit_code`` is
    negative for a signal, whose name is ``signal_name``."""

    def __init__(self, msg: str, error_index: int, error_pid: int, exit_code: int,
                 signal_name: str | None = None):
        super().__init__(msg, error_index, error_pid)
        self.error_pid = error_pid
        self.exit_code = exit_code
        self.signal_name = signal_name

    def __reduce__(self):
        return type(self), (self.msg, self.error_index, self.error_pid, self.exit_code, self.signal_name)


class SpawnException(ProcessRaisedException):
    """One or more ranks raised; ``errors`` maps every root-cause rank to its exception.

    Root causes are the ranks that raised on their own, in ascending rank order; ranks
    aborted because a sibling failed are not in ``errors``. ``error_index`` is the lowest.
    """

    def __init__(self, msg: str, error_index: int, pid: int, errors: dict | None = None):
        super().__init__(msg, error_index, pid)
        self.errors = dict(errors or {})

    def __reduce__(self):
        return type(self), (self.msg, self.error_index, self.pid, self.errors)


class SimulationError(RuntimeError):
    """A failure of the simulated program that real processes would show as a hang."""


class DeadlockError(SimulationError):
    """No rank is runnable and nothing scheduled can complete.

    ``report`` is structured: ``{"time_ns": float, "ranks": [row, ...]}`` with one row per
    rank (and per live kernel program, and main when main waits): ``rank``, ``task``
    (``"rank 3"``, ``"main"``, a program's name), ``state``, ``waits_for``, ``time_ns`` and
    ``where`` (the user's ``file:line`` where it blocked, or None). ``str()`` is a table.
    """

    def __init__(self, report: dict):
        self.report = report
        super().__init__(format_deadlock(report))


class WatchdogTimeout(SimulationError):
    """A rank ran longer than ``watchdog_s`` of wall time without yielding."""

    def __init__(self, rank: int, where: str | None, watchdog_s: float):
        self.rank = rank
        self.where = where
        self.watchdog_s = watchdog_s
        super().__init__(
            f"rank {rank} ran for more than {watchdog_s:g} s of wall time without yielding "
            f"(a busy loop?); it was at {where or 'an unknown place'}. The other ranks were "
            f"aborted. Raise RuntimeContext(watchdog_s=...) if the work is legitimately long."
        )


def format_ranks(ranks) -> str:
    """A set of ranks as sorted ranges, ``[0-3, 5-998]``: the one way every report prints
    rank sets, so that a report about N ranks does not grow with N."""
    ordered = sorted(set(ranks))
    parts = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return f"[{', '.join(parts)}]"


def generic(text: str | None, rank) -> str | None:
    """``text`` about ``rank`` with its own rank and device numbers taken out, so that ranks
    doing the same thing read alike (``all_reduce #1 ... (rank 5)`` -> ``(its rank)``)."""
    if text is None or rank is None:
        return text
    text = re.sub(rf"\brank {rank}\b", "its rank", text)
    return re.sub(r"\bdev\d+\b", "its device", text)


def group_rows(rows) -> list:
    """``(task label, row)`` per group of rank rows in the same state at the same place,
    waiting for the same thing (``ranks [0-998]``); other tasks one by one, in order."""
    groups: dict = {}
    out = []
    for r in rows:
        if r["task"] != f"rank {r['rank']}":
            out.append([r["task"], r, None])
            continue
        key = (r["state"], r["time_ns"], r["where"], generic(r["waits_for"], r["rank"]))
        if key in groups:
            groups[key][2].append(r["rank"])
        else:
            groups[key] = [None, r, [r["rank"]]]
            out.append(groups[key])
    labelled = []
    for task, r, ranks in out:
        if ranks is None or len(ranks) == 1:
            labelled.append((task or r["task"], r))
        else:
            labelled.append((f"ranks {format_ranks(ranks)}",
                             {**r, "waits_for": generic(r["waits_for"], r["rank"])}))
    return labelled


def format_deadlock(report: dict) -> str:
    rows = report["ranks"]
    blocked = [r for r in rows if r["state"] == "blocked"]
    head = (
        f"deadlock at virtual time {report['time_ns']:g} ns: no rank can make progress and "
        f"nothing scheduled can complete ({len(blocked)} of {len(rows)} ranks blocked)"
    )
    table = [("task", "state", "time_ns", "waits for", "where")]
    for task, r in group_rows(rows):
        table.append(
            (task, r["state"], f"{r['time_ns']:g}", r["waits_for"] or "-", r["where"] or "-")
        )
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = [head]
    for row in table:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[4])
    lines.extend(report.get("details", ()))
    return "\n".join(lines)


class CollectiveMismatchError(SimulationError):
    """The members of a collective called it with different arguments (or different ops).

    Raised in every member. ``collective`` is the rendezvous, ``fields`` the fingerprint
    fields that differ; the message shows each rank's fingerprint.
    """

    def __init__(self, msg: str, collective=None, fields=()):
        super().__init__(msg)
        self.collective = collective
        self.fields = list(fields)


class DistTimeoutError(SimulationError):
    """A collective stayed incomplete longer than its group's timeout of virtual time."""

    def __init__(self, msg: str, collective=None):
        super().__init__(msg)
        self.collective = collective


class LinkDownError(SimulationError):
    """A transfer had to cross a link that a fault took down (``ctx.sim.faults``)."""
