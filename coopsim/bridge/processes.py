"""Real processes for ``launch(backend="torch")``: start, join with a deadline, never leak.

Every rank is a process started by ``torch.multiprocessing.start_processes`` (so a failure is
torch's own ``ProcessRaisedException``/``ProcessExitedException``), and inside it ``rank_main``
(docs/adr/0014-pytorch-bridge.md):
- makes itself the leader of its own process group (``os.setpgrp``), so that the parent can
  kill the rank and everything it started with one ``killpg``;
- asks the kernel to SIGKILL it when the parent dies (``PR_SET_PDEATHSIG``, Linux). torch's
  child wrapper asks for SIGINT, which a rank blocked in C++ while holding the GIL (say in
  ``torch.wait``) never handles: it would outlive a parent killed with SIGKILL;
- registers a ``faulthandler`` dump of its Python stacks on SIGUSR1 into a per-rank file,
  which the parent reads to say where a rank hung;
- sets ``MASTER_ADDR``/``MASTER_PORT`` in its own environment, joins the default process group
  (``env://``, gloo or nccl), builds its ``TorchLike`` itself (nothing unpicklable is sent);
- runs ``fn``, writes ``to_host`` of its result to a file (no queue, nothing to drain), and
  destroys the process group in a ``finally`` with a bounded wait and no barrier.

The parent (``run_torch``) joins with a wall-clock deadline; on the way out — success, error,
deadline, KeyboardInterrupt — it kills every rank's process group and reaps every rank.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import faulthandler
import os
import pickle
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from coopsim.bridge.host import to_host
from coopsim.bridge.torch_like import TorchLike, TorchSim, import_torch

MASTER_ADDR = "127.0.0.1"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DESTROY_WAIT_S = 5.0  # destroy_process_group gets this long, then the rank exits anyway
STACK_DUMP_WAIT_S = 2.0  # how long a timed-out launch waits for the ranks' stack dumps
DEFAULT_PG_TIMEOUT_S = 1800.0  # torch's default for gloo (distributed_c10d.py); used without timeout_s
STARTUP_TIMEOUT_S = 120.0  # with timeout_s: start-up (import torch, rendezvous) gets this long
POLL_S = 0.1  # how often the parent looks for the ranks' "entered fn" markers during start-up


class LaunchTimeout(TimeoutError):
    """Ranks of ``launch(backend="torch", timeout_s=...)`` were still running at the deadline:
    ``timeout_s`` after the last rank entered ``fn``, or ``STARTUP_TIMEOUT_S`` after the start
    if some rank never got that far.

    They were killed (each with its process group) and reaped before this was raised.
    ``ranks``: the ranks still running; ``pids``: every rank's pid, which is also its process
    group id; ``stacks``: rank -> the Python stacks it was in (faulthandler's text);
    ``waited_s``: wall seconds from the start of the deadline's clock until every rank was dead.
    """

    def __init__(self, msg: str, ranks, pids, stacks, waited_s: float):
        super().__init__(msg)
        self.ranks = list(ranks)
        self.pids = list(pids)
        self.stacks = dict(stacks)
        self.waited_s = waited_s


def free_port() -> int:
    """A TCP port that is free now (rank 0 binds it moments later; a clash is unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((MASTER_ADDR, 0))
        return s.getsockname()[1]


def default_backend(torch) -> str:
    """nccl where CUDA is available, else gloo (PyTorch's own advice for CPU)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def run_torch(fn, args, nprocs, dist_backend, seed, timeout_s, daemon=False, start_method="spawn"):
    """Run ``fn(rank, torch_like, *args)`` on ``nprocs`` real processes; per rank ``to_host`` of
    what ``fn`` returned. Raises torch's ProcessRaisedException/ProcessExitedException when a
    rank fails, ``LaunchTimeout`` when ``timeout_s`` wall seconds pass first."""
    torch = import_torch()
    from torch import multiprocessing

    backend = dist_backend or default_backend(torch)
    pg_timeout_s = DEFAULT_PG_TIMEOUT_S if timeout_s is None else STARTUP_TIMEOUT_S + timeout_s
    with tempfile.TemporaryDirectory(prefix="coopsim-launch-") as outdir:
        spec = (fn, args, nprocs, backend, free_port(), seed, pg_timeout_s, outdir)
        context = multiprocessing.start_processes(rank_main, args=spec, nprocs=nprocs, join=False,
                                                  daemon=daemon, start_method=start_method)
        try:
            _join(context, timeout_s, Path(outdir))
        finally:
            kill_process_groups(context.processes)
        return [_result(Path(outdir), rank) for rank in range(nprocs)]


def rank_main(rank, fn, args, world_size, backend, port, seed, pg_timeout_s, outdir):
    """A rank's process (see the module docstring); exceptions propagate to torch's wrapper."""
    os.setpgrp()
    _die_with_parent()
    outdir = Path(outdir)
    stack_file = open(outdir / f"rank{rank}.stack", "w")  # open for the process's lifetime
    faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True)
    os.environ["MASTER_ADDR"] = MASTER_ADDR
    os.environ["MASTER_PORT"] = str(port)
    torch = import_torch()
    torch.distributed.init_process_group(backend, rank=rank, world_size=world_size,
                                         timeout=datetime.timedelta(seconds=pg_timeout_s))
    (outdir / f"rank{rank}.entered").touch()
    result = run_in_process_group(torch, fn, args, seed, local_rank=rank)
    try:
        data = pickle.dumps(result)
    except Exception as e:
        raise TypeError(f"rank {rank}: launch returns what fn returns (after to_host), but "
                        f"{type(result).__name__} cannot be pickled: {e}") from e
    partial = outdir / f"rank{rank}.partial"
    partial.write_bytes(data)
    partial.replace(outdir / f"rank{rank}.result")


def run_in_process_group(torch, fn, args, seed, local_rank):
    """``to_host(fn(rank, torch_like, *args))`` in an initialized default process group, which
    is destroyed afterwards whatever ``fn`` does (shared by ``launch`` and torchrun)."""
    dist = torch.distributed
    try:
        if dist.get_backend() == "nccl":
            torch.cuda.set_device(local_rank)  # one GPU per process, as nccl expects
        return to_host(fn(dist.get_rank(), TorchLike(torch, TorchSim(torch, seed)), *args))
    finally:
        _destroy_process_group(dist)


def _die_with_parent() -> None:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on Linux; elsewhere nothing (torch does the same)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _destroy_process_group(dist) -> None:
    """``destroy_process_group`` without a barrier, given at most ``DESTROY_WAIT_S``."""
    teardown = threading.Thread(target=dist.destroy_process_group, name="destroy_process_group",
                                daemon=True)
    teardown.start()
    teardown.join(DESTROY_WAIT_S)


def _join(context, timeout_s, outdir: Path) -> None:
    """Join until done; with ``timeout_s``, raise ``LaunchTimeout`` at the deadline. The clock
    of ``timeout_s`` starts when every rank has entered ``fn`` (start-up on a loaded machine
    can take longer than a test's whole budget); start-up alone gets ``STARTUP_TIMEOUT_S``."""
    if timeout_s is None:
        while not context.join():
            pass
        return
    nprocs = len(context.processes)
    started = time.monotonic()
    in_fn = None  # when every rank had entered fn
    while True:
        if in_fn is None and all((outdir / f"rank{r}.entered").exists() for r in range(nprocs)):
            in_fn = time.monotonic()
        now = time.monotonic()
        deadline = started + STARTUP_TIMEOUT_S if in_fn is None else in_fn + timeout_s
        if now >= deadline:
            raise _timed_out(context.processes, timeout_s, outdir, in_fn or started, in_fn is not None)
        wait = POLL_S if in_fn is None else deadline - now
        if context.join(timeout=wait):
            return


def _timed_out(processes, timeout_s, outdir: Path, clock_start: float, in_fn: bool) -> LaunchTimeout:
    """Ask every running rank for its stacks, kill every rank, describe what was running."""
    running = [rank for rank, p in enumerate(processes) if p.is_alive()]
    for rank in running:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(processes[rank].pid, signal.SIGUSR1)
    stacks = {}
    give_up = time.monotonic() + STACK_DUMP_WAIT_S
    for rank in running:
        path = outdir / f"rank{rank}.stack"
        while not (path.exists() and path.stat().st_size) and time.monotonic() < give_up:
            time.sleep(0.01)
        stacks[rank] = path.read_text() if path.exists() else ""
    kill_process_groups(processes)
    waited_s = time.monotonic() - clock_start
    where = "".join(f"\n-- rank {rank} (pid {processes[rank].pid}) was at:\n{stacks[rank] or '(no stack dump)'}"
                    for rank in running)
    limit = (f"timeout_s={timeout_s:g} wall seconds in fn" if in_fn else
             f"{STARTUP_TIMEOUT_S:g} s of start-up (some rank never entered fn)")
    msg = (f"launch(backend='torch'): rank(s) {running} still running after {limit}; killed "
           f"them with their process groups.{where}")
    return LaunchTimeout(msg, running, [p.pid for p in processes], stacks, waited_s)


def kill_process_groups(processes, reap_s: float = 10.0) -> None:
    """SIGKILL each rank's process group (the rank, and all it started) and reap the rank."""
    for p in processes:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(p.pid, signal.SIGKILL)
        if p.is_alive():  # it had not made its own group yet
            p.kill()
    for p in processes:
        p.join(reap_s)


def _result(outdir: Path, rank: int):
    path = outdir / f"rank{rank}.result"
    if not path.exists():
        raise RuntimeError(f"launch(backend='torch'): rank {rank} ended without returning (it was "
                           f"interrupted, e.g. by SIGINT, before fn returned)")
    return pickle.loads(path.read_bytes())
