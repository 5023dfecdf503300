"""``RuntimeContext``: the composition root, and the torch-shaped namespace users see.

It builds everything below it — the topology, the runtime port (engine, devices, links,
scheduler), and the namespaces (tensors, ``cuda``, ``distributed``, ``multiprocessing``,
``sim``) over that port — and nothing below imports it (docs/adr/0012-layering.md). It is
the only module that reads the context's private fields.
"""

from __future__ import annotations

from coopsim.distributed.api import Distributed
from coopsim.distributed.ccl import load_ccl
from coopsim.engine import Handle
from coopsim.kernels.launch import launch as launch_kernel
from coopsim.runtime.multiprocessing import Multiprocessing
from coopsim.runtime.port import RANK_ORDERS, Runtime
from coopsim.runtime.sim import Sim
from coopsim.runtime.watchdog import DEFAULT_GRACE_S
from coopsim.tensor import TensorAPI
from coopsim.tensor.cuda import Cuda
from coopsim.testing import Explorer, Faults, FlightRecorder
from coopsim.topology import load_topology


class RuntimeContext:
    """One simulated machine, its virtual clock and the ranks that run on it.

    Its public names are PyTorch's (``zeros``, ``float32``, ``distributed``, ``cuda``,
    ``multiprocessing`` ...) so that a worker written for ``torch`` runs on it; what has no
    PyTorch name lives under ``sim``. State lives on ``_runtime`` (the port every namespace
    shares); a context is bound to the thread that created it.
    """

    def __init__(self, topology=None, *, seed: int = 0, watchdog_s: float | None = None,
                 rank_order: str = "ascending", ccl=None, timing_only: bool = False,
                 watchdog_grace_s: float = DEFAULT_GRACE_S):
        """``topology``: a bundled name (``"ring8"``), a path to a YAML file, or None for the
        default; ``seed`` seeds everything random (``rank_order="shuffled"``); ``watchdog_s``
        stops a rank that runs that many wall seconds without yielding (default: off);
        ``ccl``: collective settings over the bundled ccl.yaml (a path or a mapping);
        ``timing_only``: tensors carry shapes and dtypes but no data — same virtual times,
        no host memory, host reads raise (docs/adr/0020-timing-only-tensors.md);
        ``watchdog_grace_s``: how long a rank that swallows the watchdog's interrupts may keep
        spinning before the process ends with the report on stderr (docs/adr/0019)."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"RuntimeContext: seed must be an int, got {seed!r}")
        if watchdog_s is not None and not (isinstance(watchdog_s, (int, float)) and watchdog_s > 0):
            raise ValueError(f"RuntimeContext: watchdog_s must be None or seconds > 0, got {watchdog_s!r}")
        if isinstance(watchdog_grace_s, bool) or not isinstance(watchdog_grace_s, (int, float)) \
                or not 0 < watchdog_grace_s < float("inf"):
            raise ValueError(f"RuntimeContext: watchdog_grace_s must be seconds > 0, got {watchdog_grace_s!r}")
        if rank_order not in RANK_ORDERS:
            raise ValueError(f"RuntimeContext: rank_order must be one of {RANK_ORDERS}, got {rank_order!r}")
        if not isinstance(timing_only, bool):
            raise TypeError(f"RuntimeContext: timing_only must be a bool, got {timing_only!r}")
        rt = self._runtime = Runtime(load_topology(topology), seed=seed, watchdog_s=watchdog_s,
                                     rank_order=rank_order, timing_only=timing_only,
                                     watchdog_grace_s=watchdog_grace_s)
        self.timing_only = timing_only
        self.topology = rt.topology
        self.seed = seed
        self.watchdog_s = watchdog_s
        self.rank_order = rank_order
        self.engine = rt.engine
        self.network = rt.network
        self.ccl = load_ccl(ccl)
        self.wait = rt.wait  # bound once: the hot path has no extra call level
        tensors = TensorAPI(rt)
        for name in _TENSOR_NAMES:
            setattr(self, name, getattr(tensors, name))
        self.multiprocessing = Multiprocessing(rt)
        self.sim = Sim(rt)
        self.cuda = self.accelerator = Cuda(rt)
        self.distributed = Distributed(rt, self.ccl)
        # the testing tools under ctx.sim (coopsim.testing; docs/adr/0025-testing-hooks.md)
        self.sim.flight_recorder = FlightRecorder(rt)
        self.sim.dump_flight_record = self.sim.flight_recorder.dump
        self.sim.faults = Faults(rt)
        explorer = Explorer(self, lambda: RuntimeContext(topology, seed=seed, watchdog_s=watchdog_s,
                                                         rank_order=rank_order, ccl=ccl,
                                                         timing_only=timing_only,
                                                         watchdog_grace_s=watchdog_grace_s),
                            prepare=lambda fresh: fresh.sim.faults.load(self.sim.faults.specs))
        self.sim.explore, self.sim.replay = explorer.explore, explorer.replay

    def __enter__(self) -> "RuntimeContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Abort every live task: a spawn started with ``join=False`` and never joined to
        the end, kernel programs never waited for. Their ``finally`` blocks run."""
        self._runtime.scheduler.close()

    def wait(self, handle: Handle) -> Handle:  # replaced per instance by the runtime's
        """Wait until ``handle`` is complete (C2), and return it (see ``Runtime.wait``)."""
        return self._runtime.wait(handle)

    def launch(self, kernel, grid, *args) -> Handle:
        """Run ``kernel(tl, *args)`` for every program of ``grid`` on the caller's device
        stream (asynchronous; see ``coopsim.kernels``). Returns the op's Handle."""
        return launch_kernel(self._runtime, kernel, grid, *args)

    def __getattr__(self, name: str):
        """Only reached for a name the context lacks: say so, and where the supported ones are."""
        if name.startswith("__"):  # protocol probes (copy, pickle) expect a plain AttributeError
            raise AttributeError(name)
        raise AttributeError(f"coopsim has no torch.{name} (see docs/torch-surface.md for what is "
                             f"supported)")


# The tensor namespace's public names: methods are bound per context (in __init__), the
# constants (dtypes, Tensor, device) are also class attributes, as on the torch module.
_TENSOR_NAMES = tuple(name for name in dir(TensorAPI) if not name.startswith("_"))
for _name in _TENSOR_NAMES:
    if not callable(getattr(TensorAPI, _name)) or isinstance(getattr(TensorAPI, _name), type):
        setattr(RuntimeContext, _name, getattr(TensorAPI, _name))
del _name
