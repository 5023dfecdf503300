"""``launch``: one worker, two runtimes — coopsim's simulated machine or real PyTorch.

``fn(rank, torch_like, *args)`` runs once per rank, in a default process group that ``launch``
initializes before ``fn`` and destroys after it (so ``fn`` must not call
``init_process_group``):
- ``backend="sim"``: ranks are greenlets on a ``RuntimeContext`` (``torch_like`` is the context);
- ``backend="torch"``: ranks are real processes (``torch_like`` is ``torch`` plus ``sim``; see
  ``coopsim.bridge.processes`` and ``coopsim.bridge.torch_like``).
It returns, per rank, ``to_host`` of what ``fn`` returned (``coopsim.bridge.host``).
"""

from __future__ import annotations

import pickle

from coopsim.context import RuntimeContext
from coopsim.bridge.host import to_host

BACKENDS = ("sim", "torch")


def launch(fn, args=(), nprocs=1, backend="sim", topology=None, *, dist_backend=None, seed=0,
           timeout_s=None, sim_options=None, **spawn_kwargs) -> list:
    """Run ``fn(rank, torch_like, *args)`` for each rank in ``range(nprocs)``; return the list of
    what each rank returned, converted by ``to_host``.

    ``backend``: "sim" or "torch". ``dist_backend``: the ``init_process_group`` backend (torch:
    default nccl with CUDA, else gloo; sim: default coopsim's). ``seed``: the context's seed,
    ``torch_like.sim.seed`` on torch. ``topology`` and ``sim_options`` (more ``RuntimeContext``
    keywords: ``ccl``, ``watchdog_s``, ``rank_order``) are for "sim"; ``timeout_s`` (wall
    seconds that ``fn`` may run once every rank is in it, then ``LaunchTimeout``) is for
    "torch" — each backend ignores the other's, so one call switches runtimes by its
    ``backend`` alone. ``spawn_kwargs``
    (``daemon``, ``start_method``) go to the spawn call; ``launch`` always joins.
    Failures: coopsim's ``SpawnException``/``DeadlockError`` on "sim"; torch's
    ``ProcessRaisedException``/``ProcessExitedException`` on "torch".
    """
    if backend not in BACKENDS:
        raise ValueError(f"launch: backend must be one of {BACKENDS}, got {backend!r}")
    if not callable(fn):
        raise TypeError(f"launch: fn must be callable, got {fn!r}")
    if not isinstance(args, tuple):
        raise TypeError(f"launch: args must be a tuple, got {type(args).__name__}")
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"launch: nprocs must be an int >= 1, got {nprocs!r}")
    if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ValueError(f"launch: timeout_s must be None or seconds > 0, got {timeout_s!r}")
    unknown = sorted(set(spawn_kwargs) - {"daemon", "start_method"})
    if unknown:
        raise TypeError(f"launch: unexpected keyword(s) {unknown}; spawn keywords are daemon and "
                        f"start_method (launch always joins)")
    if backend == "torch":
        from coopsim.bridge.processes import run_torch

        _check_picklable(fn, args)
        return run_torch(fn, args, nprocs, dist_backend, seed, timeout_s, **spawn_kwargs)
    results = [None] * nprocs
    with RuntimeContext(topology, seed=seed, **(sim_options or {})) as ctx:
        ctx.multiprocessing.spawn(_sim_rank, args=(ctx, fn, args, dist_backend, results),
                                  nprocs=nprocs, **spawn_kwargs)
    return results


def _check_picklable(fn, args) -> None:
    """Real processes receive ``fn`` and ``args`` pickled (``fn`` by its importable name)."""
    for what, value in (("fn", fn), ("args", args)):
        try:
            pickle.dumps(value)
        except Exception as e:
            raise TypeError(f"launch(backend='torch'): {what} must be picklable, since the ranks "
                            f"are processes that receive it; fn must be a module-level function "
                            f"of an importable module (not a lambda or a nested function), and the "
                            f"script needs 'if __name__ == \"__main__\":'. Got {value!r}: {e}") from e


def _sim_rank(rank, ctx, fn, args, dist_backend, results) -> None:
    """A rank on coopsim: the same process-group frame as ``processes.rank_main``."""
    dist = ctx.distributed
    dist.init_process_group(dist_backend)
    try:
        results[rank] = to_host(fn(rank, ctx, *args))
    finally:
        dist.destroy_process_group()
