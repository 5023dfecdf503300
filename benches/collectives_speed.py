"""python -m benches.collectives_speed: what a collective costs in wall time.

Prints, measured in one run (best of ``--repeat`` interleaved runs):
(a) 8 ranks x N all_reduce of one float32: wall time per rank-collective as a multiple of a
    raw greenlet round trip;
(b) 8 ranks all_reduce of 1M float32: coopsim's wall time over ``numpy.add.reduce`` of the
    stacked inputs (target: at most 2x);
(c) 1024 ranks, one all_reduce, in the transfer and the analytic model (wall seconds).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import coopsim
from benches.scheduler import raw_round_trip_s


def _many_small(rank, ctx, iters):
    dist = ctx.distributed
    dist.init_process_group()
    t = ctx.ones(1)
    for _ in range(iters):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)  # MAX: the value stays 1, no overflow
    t.item()


def _one_large(rank, ctx, n, out):
    """``out`` gets the wall time from the first rank's all_reduce call to the last rank's
    read of its result (tensors made, and every rank past a barrier, before)."""
    dist = ctx.distributed
    dist.init_process_group()
    t = ctx.full((n,), float(rank + 1))
    dist.barrier()
    if rank == 0:
        out.append(time.perf_counter())
    dist.all_reduce(t)
    t[-1].item()  # waits for the collective (reading one element copies nothing big)
    if rank == dist.get_world_size() - 1:
        out.append(time.perf_counter())


def spawn_s(topology, worker, nprocs, *args, model="transfer", algorithm=None) -> float:
    ccl = {"model": model}
    if algorithm:
        ccl["algorithms"] = {"all_reduce": algorithm}
    with coopsim.RuntimeContext(topology, ccl=ccl) as ctx:
        start = time.perf_counter()
        ctx.multiprocessing.spawn(worker, args=(ctx, *args), nprocs=nprocs)
        return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.collectives_speed",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=1000, help="all_reduces per rank in (a)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repetitions; the best is kept")
    parser.add_argument("--large-ranks", type=int, default=1024, help="ranks in (c)")
    args = parser.parse_args(argv)
    print(f"# coopsim collectives benchmark (best of {args.repeat} interleaved runs)")

    models = ("transfer", "analytic")
    raws, smalls = [], {m: [] for m in models}
    for _ in range(args.repeat):
        raws.append(raw_round_trip_s(100_000, 8))
        for m in models:
            smalls[m].append(spawn_s("fully_connected8", _many_small, 8, args.iters, model=m) / (8 * args.iters))
    raw = min(raws)
    for m in models:
        small = min(smalls[m])
        print(f"(a) 8 ranks x {args.iters} all_reduce(1 x float32), {m} model: {small * 1e6:.1f} us "
              f"per rank-collective = {small / raw:.0f}x a raw greenlet round trip ({raw * 1e9:.0f} ns)")

    n = 1 << 20
    sims, nps = {m: [] for m in models}, []
    for _ in range(args.repeat):
        for m in models:
            out: list = []
            spawn_s("fully_connected8", _one_large, 8, n, out, model=m)
            sims[m].append(out[1] - out[0])
        stacked = np.stack([np.full(n, float(r + 1), dtype=np.float32) for r in range(8)])
        start = time.perf_counter()
        np.add.reduce(stacked, axis=0)
        nps.append(time.perf_counter() - start)
    for m in models:
        print(f"(b) 8 ranks all_reduce(1M float32), {m} model: coopsim {min(sims[m]) * 1e3:.2f} ms "
              f"(first call to last read), numpy.add.reduce {min(nps) * 1e3:.2f} ms: "
              f"{min(sims[m]) / min(nps):.2f}x (target <= 2x)")

    p = args.large_ranks
    side = 1
    while side * side < p:
        side += 1
    topology = {"name": f"switch{p}", "device_kinds": {"gpu": {
        "memory_bytes": 80 * 2**30, "memory_bandwidth_GBps": 2000, "peak_flops": {"float32": 20e12},
        "launch_overhead_ns": 4000}}, "devices": [{"kind": "gpu", "count": p}],
        "links": [{"pattern": "switch", "bandwidth_GBps": 100, "latency_ns": 500}]}
    for model in ("transfer", "analytic"):
        with coopsim.RuntimeContext(topology, ccl={"model": model}) as ctx:
            start = time.perf_counter()
            ctx.multiprocessing.spawn(_many_small, args=(ctx, 1), nprocs=p)
            wall = time.perf_counter() - start
        print(f"(c) {p} ranks, one all_reduce(1 x float32), {model} model: {wall:.2f} s wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
