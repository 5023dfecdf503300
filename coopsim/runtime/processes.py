"""``ctx.multiprocessing.Process``: the tutorial's launcher, run as ranks of one spawn.

How processes become a spawn (docs/adr/0015):
- ``start()`` only records the process (it must be called from main, as ranks cannot start
  processes); it gets its name and a pid then;
- the first ``join()`` turns every process started and not yet run into ONE spawn, in start
  order, and runs it: process ``i`` starts as rank ``i`` on device ``i`` (``is_alive()`` and
  ``exitcode`` only read, they never run anything);
- ``init_process_group(rank=r, world_size=n)`` in a process makes it rank ``r`` (ranks are
  swapped with the process that held ``r``; ``n`` must be the number of processes);
- when the spawn ends, each process has an ``exitcode``: 0 (returned), 1 (raised: its traceback
  goes to stderr, as a child process prints it), -15 (aborted because a sibling failed), -6
  (blocked in a hang that coopsim detected: NCCL's watchdog aborts such a process). The
  coopsim exception that ended the spawn (``SpawnException``, ``DeadlockError`` ...) is
  ``sim_error`` of every process of it, and a deadlock report goes to stderr.
``join(timeout)`` stops after ``timeout`` wall seconds; a later ``join`` continues.
"""

from __future__ import annotations

import sys
import time

from coopsim.errors import SpawnException
from coopsim.runtime.scheduler import ABORTED, ENDED, FAILED

PROCESS_RANKS = "processes"  # the spawn slot holding the Launch of Process-started ranks
START_METHODS = ("spawn", "fork", "forkserver")
_EXITCODES = {ENDED: 0, FAILED: 1, ABORTED: -15}
HUNG_EXITCODE = -6  # SIGABRT: what NCCL's watchdog does to a process stuck in a hang


class Launch:
    """The processes run as one spawn: their ranks, and the rank changes asked for."""

    def __init__(self, processes):
        self.processes = processes
        self.tasks = []  # process i's Task, filled when the spawn starts
        self.assigned: set[int] = set()

    def run_process(self, index: int) -> None:
        self.processes[index].run()

    def assign(self, task, rank, world_size) -> None:
        """Make ``task`` rank ``rank`` (from ``init_process_group``), as a launcher would."""
        n = len(self.tasks)
        if world_size not in (-1, None) and world_size != n:
            raise ValueError(f"init_process_group: world_size={world_size}, but {n} processes were "
                             f"started before the first join(); start them all, then join")
        if rank in (-1, None):
            return
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < n:
            raise ValueError(f"init_process_group: rank must be in 0..{n - 1}, got {rank!r}")
        if rank in self.assigned and task.rank != rank:
            raise ValueError(f"init_process_group: rank {rank} was already taken by another process")
        other = next(t for t in self.tasks if t.rank == rank)
        if other is not task:
            if other.rank in self.assigned:
                raise ValueError(f"init_process_group: rank {rank} was already taken by another process")
            for t, r in ((other, task.rank), (task, rank)):
                t.rank, t.key, t.name, t.device = r, (r,), f"rank {r}", r
            self.tasks.sort(key=lambda t: t.rank)
        self.assigned.add(rank)


class ProcessBase:
    """``multiprocessing.Process`` for a ``RuntimeContext`` (subclasses may override ``run``)."""

    _mp = None  # the Multiprocessing namespace; set on the per-context subclass
    _prefix = "Process"

    def __init__(self, group=None, target=None, name=None, args=(), kwargs=None, *, daemon=None):
        if group is not None:
            raise ValueError("group argument must be None for now")
        self._target = target
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self.name = name
        self.daemon = bool(daemon)
        self._task = None
        self._launch = None
        self._pid = None
        self.sim_error = None  # coopsim's: the exception that ended this process's spawn

    def run(self) -> None:
        if self._target is not None:
            self._target(*self._args, **self._kwargs)

    def start(self) -> None:
        mp = self._mp
        rt = mp._rt
        if self._pid is not None:
            raise AssertionError("cannot start a process twice")
        if rt.current_task() is not None:
            raise RuntimeError("Process.start() called inside a rank: ranks cannot start processes; "
                               "start them from the main program")
        rt.check_thread("Process.start")
        self._pid = rt.new_pid()
        mp._started.append(self)
        if self.name is None:
            self.name = f"{self._prefix}-{len(mp._started)}"

    @property
    def pid(self):
        return self._pid

    @property
    def ident(self):
        return self._pid

    @property
    def exitcode(self):
        if self._task is None:
            return None
        if self.sim_error is not None and not isinstance(self.sim_error, SpawnException) \
                and self._task.state == ABORTED:
            return HUNG_EXITCODE
        return _EXITCODES.get(self._task.state)

    def is_alive(self) -> bool:
        return self._pid is not None and self.exitcode is None

    def join(self, timeout=None) -> None:
        if self._pid is None:
            raise AssertionError("can only join a started process")
        deadline = None if timeout is None else time.monotonic() + timeout
        self._mp._run_started(self, deadline)

    def __repr__(self) -> str:
        state = "initial" if self._pid is None else ("started" if self.exitcode is None else
                                                     f"stopped exitcode={self.exitcode}")
        return f"<{type(self).__name__} name={self.name!r} {state}>"


def launch(mp, process, deadline) -> None:
    """Run the spawn of ``process`` (starting one from every process started and not yet run)."""
    rt = mp._rt
    if process._launch is None:
        if rt.current_task() is not None:
            raise RuntimeError("Process.join() called inside a rank; join from the main program")
        if rt.scheduler.spawn is not None:
            raise RuntimeError("Process.join(): this RuntimeContext already runs a spawn that has "
                               "not been joined to the end")
        processes, mp._started = mp._started, []
        run = Launch(processes)
        spawn = rt.scheduler.start_spawn(run.run_process, (), len(processes))
        spawn.state[PROCESS_RANKS] = run
        run.tasks = spawn.ranks  # the same list: rank changes re-sort the spawn's ranks
        for p, task in zip(processes, run.tasks):
            p._task, p._launch = task, run
    if all(p.exitcode is not None for p in process._launch.processes):
        return
    try:
        rt.scheduler.join_spawn(deadline)
    except Exception as e:  # the processes' exit codes say it; their stderr shows why
        for p in process._launch.processes:
            p.sim_error = e
        _print_failure(e)


def _print_failure(error) -> None:
    if isinstance(error, SpawnException):
        sys.stderr.write(error.msg.lstrip("\n") + "\n")
    else:
        sys.stderr.write(f"{type(error).__name__}: {error}\n")
