"""One worker, three ways to run it (docs/adr/0014-pytorch-bridge.md):

    python examples/portable.py            # coopsim: 2 ranks on a simulated machine
    python examples/portable.py torch      # 2 real processes (pip install 'coopsim[torch]')
    torchrun --standalone --nproc-per-node 2 -m coopsim.bridge.torchrun examples/portable.py
"""

import sys

import coopsim


def worker(rank, torch):
    dist = torch.distributed
    t = torch.ones(4) * (rank + 1)
    dist.all_reduce(t)  # gloo or nccl on PyTorch, the simulated machine on coopsim
    # one write of the whole line: ranks that share a pipe cannot split each other's lines
    print(f"rank {rank} of {dist.get_world_size()}: all_reduce -> {t.tolist()}\n", end="", flush=True)
    return t


if __name__ == "__main__":
    coopsim.launch(worker, nprocs=2, backend=sys.argv[1] if len(sys.argv) > 1 else "sim")
