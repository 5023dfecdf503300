"""``RuntimeContext``: the torch-shaped namespace that owns one simulated machine."""

from __future__ import annotations

import sys
import threading

from greenlet import getcurrent

from coopsim.engine import Engine, Handle, Network, SimDevice
from coopsim.errors import DeadlockError
from coopsim.runtime.frames import user_location
from coopsim.distributed.api import Distributed
from coopsim.distributed.ccl import load_ccl
from coopsim.runtime.cuda import Cuda
from coopsim.runtime.multiprocessing import Multiprocessing
from coopsim.runtime.scheduler import Scheduler
from coopsim.runtime.sim import Sim
from coopsim.tensor import TensorAPI
from coopsim.topology import load_topology

RANK_ORDERS = ("ascending", "shuffled")


class RuntimeContext(TensorAPI):
    """One simulated machine, its virtual clock and the ranks that run on it.

    State (all on the context, none in module globals):
    - ``engine``: the virtual clock and event heap;
    - ``_ranks``: greenlet -> scheduler ``Task`` for every live task (the ranks of the
      running spawn, and kernel program instances);
    - ``_pending_worker_waits``: ``(task, handle)`` appended by a task that blocks in
      ``wait``, consumed by the scheduler after each round (empty between rounds);
    - ``_scheduler``: runs the tasks (rounds, drain); ``_scheduler.spawn`` is the spawn
      being run, if any.

    A context is bound to the thread that created it.
    """

    def __init__(self, topology=None, *, seed: int = 0, watchdog_s: float | None = None,
                 rank_order: str = "ascending", ccl=None):
        """``topology``: a bundled name (``"ring8"``), a path to a YAML file, or None for the
        default; ``seed`` seeds everything random (``rank_order="shuffled"``); ``watchdog_s``
        stops a rank that runs that many wall seconds without yielding (default: off);
        ``ccl``: collective settings over configs/ccl.yaml (a path or a mapping)."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"RuntimeContext: seed must be an int, got {seed!r}")
        if watchdog_s is not None and not (isinstance(watchdog_s, (int, float)) and watchdog_s > 0):
            raise ValueError(f"RuntimeContext: watchdog_s must be None or seconds > 0, got {watchdog_s!r}")
        if rank_order not in RANK_ORDERS:
            raise ValueError(f"RuntimeContext: rank_order must be one of {RANK_ORDERS}, got {rank_order!r}")
        self.topology = load_topology(topology)
        self.seed = seed
        self.watchdog_s = watchdog_s
        self.rank_order = rank_order
        self.engine = Engine()
        self._devices = [SimDevice(self.engine, d, self.topology.name) for d in self.topology.devices]
        self.network = Network(self.engine)
        self._main_device = 0
        self._launches = 0  # kernel launches so far: orders program tasks (C9)
        self._ranks: dict = {}
        self._pending_worker_waits: list = []
        self._scheduler = Scheduler(self)
        self._thread_id = threading.get_ident()
        self._last_pid = 0
        self.multiprocessing = Multiprocessing(self)
        self.sim = Sim(self)
        self.cuda = self.accelerator = Cuda(self)
        self.ccl = load_ccl(ccl)
        self.distributed = Distributed(self)

    def __enter__(self) -> "RuntimeContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Abort every live task: a spawn started with ``join=False`` and never joined to
        the end, kernel programs never waited for. Their ``finally`` blocks run."""
        scheduler = self._scheduler
        scheduler.abort()
        if scheduler.spawn is not None:
            scheduler._finish_spawn(None)

    def _new_pid(self) -> int:
        self._last_pid += 1
        return self._last_pid

    def launch(self, kernel, grid, *args) -> Handle:
        """Run ``kernel(tl, *args)`` for every program of ``grid`` on the caller's device
        stream (asynchronous; see ``coopsim.kernels``). Returns the op's Handle."""
        from coopsim.kernels.launch import launch

        return launch(self, kernel, grid, *args)

    def _current_task(self):
        """The scheduler Task of the calling greenlet, or None in main."""
        return self._ranks.get(getcurrent())

    def _device(self) -> SimDevice:
        """The calling task's current device (a rank's is its rank's; main's is device 0)."""
        task = self._ranks.get(getcurrent())
        index = self._main_device if task is None else task.device
        if index >= len(self._devices):
            who = "main" if task is None else task.name
            raise RuntimeError(
                f"{who} has no device {index}: topology {self.topology.name!r} has "
                f"{len(self._devices)} devices; spawn at most that many ranks, or choose a "
                f"larger topology (RuntimeContext(topology=...))"
            )
        return self._devices[index]

    def _check_thread(self, what: str) -> None:
        if threading.get_ident() != self._thread_id:
            raise RuntimeError(
                f"{what} called from thread {threading.current_thread().name!r}, but this "
                f"RuntimeContext belongs to the thread that created it; greenlets cannot "
                f"cross threads"
            )

    def wait(self, handle: Handle) -> Handle:
        """Wait until ``handle`` is complete (C2), and return it.

        - already complete: return at once, no switch, no engine step;
        - in a rank: queue ``(rank, handle)`` on ``_pending_worker_waits`` and switch to the
          scheduler, which resumes this rank once ``handle`` is complete (C3);
        - in main with no spawn running: drive the engine until ``handle`` completes.
        """
        if handle.done:
            return handle
        rank = self._ranks.get(getcurrent())
        if rank is not None:
            self._pending_worker_waits.append((rank, handle))
            self._scheduler.to_scheduler(True)  # True tells the scheduler: blocked, not ended
            return handle
        return self._drive_until(handle)

    def _drive_until(self, handle: Handle) -> Handle:
        """Main's wait: run rounds (kernel programs) and drains until ``handle`` is done."""
        self._check_thread("wait")
        scheduler = self._scheduler
        if scheduler.spawn is not None:
            raise RuntimeError(
                "wait called from main while a spawn started with join=False is running: "
                "its ranks only progress inside ProcessContext.join(); call join() instead"
            )
        try:
            scheduler.run(lambda: handle.done)
        except DeadlockError as e:
            e.report["ranks"].insert(0, {
                "rank": None, "task": "main", "state": "blocked", "waits_for": handle.desc,
                "time_ns": self.engine.now_ns, "where": user_location(sys._getframe(1)),
            })
            raise DeadlockError(e.report) from None
        return handle
