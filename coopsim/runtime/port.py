"""The runtime port: everything the layers above the scheduler may use.

``tensor``, ``kernels``, ``distributed`` and the CUDA and ``sim`` namespaces talk to the
runtime through one ``Runtime`` object, never through the context's private fields
(docs/adr/0012-layering.md). A ``RuntimeContext`` builds one ``Runtime`` and hands it to
every namespace; tests reach it as ``ctx.sim.runtime``.

State (all of it per context, none in module globals):
- ``engine``, ``network``, ``devices`` (one ``SimDevice`` per topology device, by index,
  each made on first use: ``runtime/devicelist.py``);
- ``tasks``: greenlet -> ``Task`` for every live task (ranks of the running spawn, kernel
  programs); a greenlet is in it exactly while its task is alive;
- ``pending_waits``: ``(task, handle)`` appended by a task that blocks in ``wait``, moved onto
  the handles by the scheduler after each round (empty between rounds, C2); the blocking
  task then hands the round on to its next started task, or switches to the scheduler;
- ``main_device``: main's current device (``torch.cuda.set_device`` in main);
- ``scheduler``: rounds, drain, abort; ``scheduler.spawn`` is the running spawn, if any;
- the layers' hooks: deadlock explainers, spawn-end checks and cleanups, and the testing
  toolkit's (round strategy, comm/error/spawn/before-collective hooks), each inert while empty;
- ``timing_only``: tensors have shapes and dtypes, no data (docs/adr/0020).

A runtime is bound to the thread that created it.
"""

from __future__ import annotations

import threading

from greenlet import getcurrent

from coopsim.engine import Engine, Handle, Network, SimDevice
from coopsim.runtime.devicelist import Devices
from coopsim.runtime.scheduler import Scheduler, Task
from coopsim.runtime.watchdog import DEFAULT_GRACE_S

RANK_ORDERS = ("ascending", "shuffled")


class Runtime:
    """One simulated machine's runtime: its clock, devices, links, tasks and scheduler."""

    def __init__(self, topology, *, seed: int = 0, watchdog_s: float | None = None,
                 rank_order: str = "ascending", timing_only: bool = False,
                 watchdog_grace_s: float = DEFAULT_GRACE_S):
        self.topology = topology
        self.seed = seed
        self.watchdog_s = watchdog_s
        self.watchdog_grace_s = watchdog_grace_s
        self.rank_order = rank_order
        self.engine = Engine()
        self.devices = Devices(self.engine, topology)  # each SimDevice made on first use
        self.network = Network(self.engine)
        self.tasks: dict = {}
        self.pending_waits: list = []
        self.main_device = 0
        self.thread_id = threading.get_ident()
        self.explainers: list = []  # deadlock explainers: fn(report, tasks), in registration order
        self.spawn_checks: list = []  # fn(), at a spawn's successful end; may raise
        self.spawn_cleanups: list = [self._settle]  # fn(outcome), at every spawn's end
        self._last_pid = 0
        self._launches = 0
        self._layer_state: dict = {}
        self.scheduler = Scheduler(self)
        self.timing_only = timing_only  # tensors have shapes and dtypes, no data (ADR-0020)
        # Hooks for coopsim.testing (docs/adr/0025-testing-hooks.md); inert unless a tool sets them.
        self.strategy = None  # schedule exploration: round(batch), choose(sends); see coopsim.testing.explore
        # fn(task, group, seq, op, numel_in, numel_out, dtype, done, peer, site) as each op is issued
        self.comm_hooks: list = []
        self.error_hooks: list = []  # fn(error) when a run fails, before its tasks are aborted
        self.spawn_hooks: list = []  # fn(spawn) when a spawn starts
        self.before_collective: list = []  # fn(op, task) in the rank, before it issues a collective

    # -- who is calling ----------------------------------------------------------------------

    def current_task(self) -> Task | None:
        """The scheduler Task of the calling greenlet, or None in main."""
        return self.tasks.get(getcurrent())

    def current_device(self) -> SimDevice:
        """The calling task's current device (a rank's is its rank's; main's is ``main_device``)."""
        task = self.tasks.get(getcurrent())
        index = self.main_device if task is None else task.device
        made = self.devices.by_index  # the plain list: no Python call when the device exists
        if index >= len(made):
            who = "main" if task is None else task.name
            raise RuntimeError(
                f"{who} has no device {index}: topology {self.topology.name!r} has "
                f"{len(self.devices)} devices; spawn at most that many ranks, or choose a "
                f"larger topology (RuntimeContext(topology=...))"
            )
        device = made[index]
        return device if device is not None else self.devices[index]

    def set_current_device(self, index: int) -> None:
        task = self.current_task()
        if task is None:
            self.main_device = index
        else:
            task.device = index

    def check_thread(self, what: str) -> None:
        if threading.get_ident() != self.thread_id:
            raise RuntimeError(
                f"{what} called from thread {threading.current_thread().name!r}, but this "
                f"RuntimeContext belongs to the thread that created it; greenlets cannot "
                f"cross threads"
            )

    # -- waiting (C2) ------------------------------------------------------------------------

    def wait(self, handle: Handle) -> Handle:
        """Wait until ``handle`` is complete (C2), and return it.

        - already complete: return at once, no switch, no engine step;
        - in a task: queue ``(task, handle)`` on ``pending_waits`` and leave the rest of the
          round to the others: switch to the round's next task if it has started (it was
          suspended in this same method), else to the scheduler; the scheduler registers the
          queue after the round and resumes the task once ``handle`` is complete (C3);
        - in main with no spawn running: drive the engine until ``handle`` completes.
        """
        try:
            if handle.done:
                return handle
        except AttributeError:
            raise TypeError(f"wait: handle must be a coopsim Handle (ctx.sim.timer, an event, a "
                            f"Work's op), got {handle!r} ({type(handle).__name__})") from None
        task = self.tasks.get(getcurrent())
        if task is not None:
            self.pending_waits.append((task, handle))
            scheduler = self.scheduler
            i = scheduler.next
            t = scheduler.batch[i]  # the round's next task (a never-started end mark after the last)
            if t.started:  # hand the round on to it
                scheduler.next = i + 1
                t.now_ns = task.now_ns
                t.switch()
            else:
                scheduler.to_scheduler(True)  # True tells the scheduler: blocked, not ended
            return handle
        self.check_thread("wait")
        return self.scheduler.drive_until(handle)

    # -- tasks -------------------------------------------------------------------------------

    def add_task(self, task: Task, fn, args=()) -> Task:
        """Make ``fn(*args)`` a runnable task whose greenlet's parent is the scheduler's (C4)."""
        return self.scheduler.add_task(task, fn, args)

    def interrupt(self, task: Task, error: BaseException) -> None:
        """Raise ``error`` in the blocked ``task`` at its wait, next round (a failure that
        concerns several ranks at once: each raises on its own, a root cause, C6)."""
        self.scheduler.interrupt(task, error)

    def new_pid(self) -> int:
        self._last_pid += 1
        return self._last_pid

    def next_launch(self) -> int:
        """Number the kernel launches of this runtime (orders their program tasks, C9)."""
        self._launches += 1
        return self._launches

    # -- per-spawn state and diagnosis -------------------------------------------------------

    @property
    def spawn(self):
        """The running spawn (``coopsim.runtime.scheduler.Spawn``), or None."""
        return self.scheduler.spawn

    def spawn_state(self, key: str):
        """The running spawn's slot ``key`` (None if unset or no spawn runs). A layer keeps
        its per-spawn state there, so that nothing of it outlives the spawn."""
        spawn = self.scheduler.spawn
        return None if spawn is None else spawn.state.get(key)

    def set_spawn_state(self, key: str, value) -> None:
        spawn = self.scheduler.spawn
        if spawn is None:
            raise RuntimeError(f"no spawn is running: cannot keep per-spawn state {key!r}")
        spawn.state[key] = value

    def add_deadlock_explainer(self, explain) -> None:
        """``explain(report, tasks)`` adds details to every deadlock report, after the rows
        (``tasks`` are the rows' tasks, in row order)."""
        self.explainers.append(explain)

    def add_spawn_end_hooks(self, check=None, cleanup=None) -> None:
        """``check()`` runs when every rank of a spawn has ended, before the spawn counts as
        successful; it may raise (e.g. ops that can never complete). ``cleanup(outcome)`` runs
        at the end of every spawn (``outcome``: None or the exception), while its per-spawn
        state is still readable; it must not raise."""
        if check is not None:
            self.spawn_checks.append(check)
        if cleanup is not None:
            self.spawn_cleanups.append(cleanup)

    def drain(self) -> None:
        """Complete everything scheduled that can complete, with no task alive (main only)."""
        engine = self.engine
        while engine.step_instant():
            pass

    def _settle(self, outcome) -> None:
        """After a spawn that did not end well, let its in-flight work finish and make the
        device streams forget ops that can never complete, so nothing of it delays the next
        spawn (issue 9: a leftover all_reduce blocked the next spawn's stream)."""
        spawn = self.scheduler.spawn
        if outcome is None and all(t.state == "ended" for t in spawn.ranks):
            return
        runnable = self.scheduler.runnable
        before = len(runnable)
        self.drain()
        del runnable[before:]  # the aborted tasks whose waits the drain completed: never resumed
        for device in self.devices.made():  # a device never used has no ops
            for stream in device.all_streams():
                stream.abandon()

    def context_state(self, key: str, make):
        """The context-wide slot ``key`` of a layer above, made by ``make()`` on first use
        (e.g. main's torch process state); it lives as long as the context."""
        state = self._layer_state.get(key)
        if state is None:
            state = self._layer_state[key] = make()
        return state
