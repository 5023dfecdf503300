"""``ctx.multiprocessing``: spawn ranks as greenlets, with torch.multiprocessing's API."""

from __future__ import annotations

import time
import warnings

from coopsim.errors import ProcessException, ProcessRaisedException, SpawnException
from coopsim.runtime import processes
from coopsim.runtime.queues import Queue, SimpleQueue
from coopsim.runtime.scheduler import ABORTED, ENDED, FAILED, Spawn

_EXITCODES = {ENDED: 0, FAILED: 1, ABORTED: -15}  # aborted ranks look SIGTERM-killed, as in torch


class SimProcess:
    """The stand-in for a ``multiprocessing.Process``: ``name``, ``pid``, ``exitcode``."""

    __slots__ = ("_rank",)  # one per rank: nothing else is stored

    def __init__(self, rank):
        self._rank = rank  # the rank's scheduler Task

    @property
    def name(self) -> str:
        return f"SpawnProcess-{self._rank.rank + 1}"

    @property
    def pid(self) -> int:
        return self._rank.pid

    @property
    def exitcode(self) -> int | None:
        return _EXITCODES.get(self._rank.state)

    def is_alive(self) -> bool:
        return self.exitcode is None

    def __repr__(self) -> str:
        return f"<SimProcess {self.name} rank={self._rank.rank} state={self._rank.state}>"


class ProcessContext:
    """What ``spawn(join=False)`` returns; ``join`` advances the simulation."""

    def __init__(self, scheduler, spawn: Spawn):
        self._scheduler = scheduler
        self._spawn = spawn
        self._processes = None

    @property
    def processes(self) -> list[SimProcess]:
        """One SimProcess per rank, made when first read (``spawn(join=True)`` never reads
        them: no object a rank for a list nobody sees; ADR-0036)."""
        if self._processes is None:
            self._processes = [SimProcess(r) for r in self._spawn.ranks]
        return self._processes

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def join(self, timeout: float | None = None) -> bool:
        """Run until every rank has ended (True) or ``timeout`` wall seconds passed (False).

        Raises ``SpawnException``, ``DeadlockError`` or ``WatchdogTimeout`` as ``spawn`` does.
        A later call continues where a timed-out one stopped.
        """
        if self._spawn.finished:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._scheduler.join_spawn(deadline)


class Multiprocessing:
    """The ``torch.multiprocessing``-shaped namespace of a ``RuntimeContext``."""

    ProcessContext = ProcessContext
    ProcessException = ProcessException
    ProcessRaisedException = ProcessRaisedException
    SpawnException = SpawnException

    def __init__(self, rt):
        self._rt = rt  # the runtime port
        self._start_method = None
        self._started: list = []  # Processes started and not run yet (runtime/processes.py)
        self.Process = type("Process", (processes.ProcessBase,), {"_mp": self})

    def start_processes(self, fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
        """Run ``fn(rank, *args)`` for each rank in ``range(nprocs)`` as a worker greenlet."""
        rt = self._rt
        if not callable(fn):
            raise TypeError(f"spawn: fn must be callable, got {fn!r} of type {type(fn).__name__}")
        if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
            raise ValueError(f"spawn: nprocs must be an int >= 1, got {nprocs!r}")
        if not isinstance(args, tuple):
            raise TypeError(f"spawn: args must be a tuple, got {type(args).__name__}")
        rt.check_thread("spawn")
        current = rt.current_task()
        if current is not None:
            raise RuntimeError(
                f"spawn called from inside rank {current.rank}: ranks cannot spawn ranks; "
                f"call spawn from the main program"
            )
        scheduler = rt.scheduler
        if scheduler.spawn is not None:
            raise RuntimeError(
                "spawn: this RuntimeContext already runs a spawn that has not been joined; "
                "call join() on its ProcessContext until it returns True first"
            )
        context = ProcessContext(scheduler, scheduler.start_spawn(fn, args, nprocs))
        if not join:
            return context
        while not context.join():
            pass
        return None

    def spawn(self, fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
        """``torch.multiprocessing.spawn``: as ``start_processes`` with the spawn method."""
        if start_method != "spawn":
            msg = (
                f"This method only supports start_method=spawn (got: {start_method}).\n"
                "To use a different start_method use:\n\t\t"
                " torch.multiprocessing.start_processes(...)"
            )
            warnings.warn(msg, FutureWarning, stacklevel=2)
        return self.start_processes(fn, args, nprocs, join, daemon, start_method="spawn")

    # -- the multiprocessing module's launcher (runtime/processes.py) -------------------------

    def _run_started(self, process, deadline) -> None:
        processes.launch(self, process, deadline)

    def set_start_method(self, method, force: bool = False) -> None:
        """Accepted and recorded: every coopsim process runs as ``spawn`` would run it."""
        if self._start_method is not None and not force:
            raise RuntimeError("context has already been set")
        if method is not None and method not in processes.START_METHODS:
            raise ValueError(f"cannot find context for {method!r}")
        self._start_method = method

    def get_start_method(self, allow_none: bool = False):
        if self._start_method is None and not allow_none:
            self._start_method = "spawn"
        return self._start_method

    def get_all_start_methods(self) -> list:
        return list(processes.START_METHODS)

    def get_context(self, method=None) -> "StartContext":
        if method is not None and method not in processes.START_METHODS:
            raise ValueError(f"cannot find context for {method!r}")
        return StartContext(self, method or self.get_start_method())

    def SimpleQueue(self) -> SimpleQueue:  # noqa: N802 - multiprocessing's name
        return SimpleQueue(self._rt)

    def Queue(self, maxsize: int = 0) -> Queue:  # noqa: N802 - multiprocessing's name
        return Queue(self._rt, maxsize)


class StartContext:
    """What ``get_context(method)`` returns: the module's API under one start method."""

    def __init__(self, mp: Multiprocessing, method: str):
        self._mp = mp
        self._method = method
        prefix = {"spawn": "SpawnProcess", "fork": "ForkProcess", "forkserver": "ForkServerProcess"}[method]
        self.Process = type(prefix, (mp.Process,), {"_prefix": prefix})
        self.SimpleQueue = mp.SimpleQueue
        self.Queue = mp.Queue

    def get_start_method(self, allow_none: bool = False) -> str:
        return self._method
