"""The same worker under PyTorch's own launcher (torchrun), on one machine or many.

    torchrun --standalone --nproc-per-node 2 -m coopsim.bridge.torchrun script.py [args...]
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m coopsim.bridge.torchrun script.py [args...]

Each process that torchrun starts loads ``script.py`` as a module (its ``if __name__ ==
"__main__":`` block does not run), initializes the default process group from torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``; nccl with CUDA, else
gloo), and calls ``worker(rank, torch_like)`` — the function named by ``--fn`` (default
``worker``), with ``sys.argv`` set to ``[script.py, args...]``. A script can also call
``run(worker)`` itself and be started as ``torchrun ... script.py``.

torchrun owns the processes here (start, restart, rendezvous, killing on failure); coopsim
starts nothing.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys

from coopsim.bridge.processes import default_backend, run_in_process_group
from coopsim.bridge.torch_like import import_torch


def run(fn, *args, seed: int = 0):
    """In a process started by torchrun: ``fn(rank, torch_like, *args)`` in the default process
    group; returns ``to_host`` of its result."""
    missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
               if name not in os.environ]
    if missing:
        raise RuntimeError(f"coopsim.bridge.torchrun.run: environment variable(s) {missing} are "
                           f"not set; start this script with torchrun (or use coopsim.launch)")
    torch = import_torch()
    torch.distributed.init_process_group(default_backend(torch))
    return run_in_process_group(torch, fn, args, seed, local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m coopsim.bridge.torchrun",
                                     description="Run a portable coopsim worker under torchrun.")
    parser.add_argument("--fn", default="worker", help="the worker function's name in the script")
    parser.add_argument("script", help="the Python file that defines the worker")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="passed to the script as sys.argv[1:]")
    options = parser.parse_args(argv)
    if not os.path.isfile(options.script):
        raise FileNotFoundError(f"coopsim.bridge.torchrun: script {options.script!r} does not exist")
    sys.argv = [options.script, *options.args]
    namespace = runpy.run_path(options.script, run_name="__coopsim_torchrun__")
    fn = namespace.get(options.fn)
    if not callable(fn):
        raise AttributeError(f"coopsim.bridge.torchrun: {options.script} defines no function "
                             f"{options.fn!r} (choose it with --fn NAME)")
    run(fn)


if __name__ == "__main__":
    main()
