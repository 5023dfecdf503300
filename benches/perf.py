"""python -m benches.perf: every speed figure of the speed issue, each against its peer, in one run.

Each line is the median of ``--repeat`` interleaved runs of coopsim and its peer (measured
side by side in this process, so a noisy machine moves both); a peer that is not installed
(SimPy, PyTorch) is skipped with a note. Figures:

- wait:      one coopsim timer wait / one raw greenlet round trip over as many greenlets;
- simpy:     timer events per second, coopsim / SimPy, N processes x K timeouts (the
             creation of the N processes or ranks timed in both);
- threaded:  PyTorch's in-process threaded process group time / coopsim time, 8 ranks x
             100 all_reduce(1 float) and 8 x 20 all_reduce(262,144 floats), both models;
- floor:     the same 8 x 20 all_reduce(262,144 floats) done in plain numpy on 8 separate
             buffers (reduce in rank order into a temporary and copy it out; and in cache-sized
             blocks, as coopsim's analytic model does), and threaded PG / the faster of them:
             the best ratio any simulator writing separate output buffers could show;
- numpy:     coopsim 8-rank all_reduce of 1M floats / ``numpy.add.reduce`` of the inputs;
- scale:     wall seconds and peak RSS (a child process each) of init + barrier + one tiny
             all_reduce at 4,096 ranks (and 100,000 with ``--huge``), and wall seconds of
             building a 1,024-rank ring schedule;
- main job:  wall seconds and peak RSS of ``python -m benches.allreduce`` (``--main-job``).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

import coopsim
from benches.scheduler import coopsim_wait_s, raw_round_trip_s
from coopsim.distributed.algorithms import build_schedule
from coopsim.distributed.blocked import all_reduce_blocks
from coopsim.tensor.storage import aligned


def _medians(repeat: int, *runs) -> list[float]:
    """Median of each of ``runs`` over ``repeat`` interleaved calls (each returns seconds)."""
    times = [[] for _ in runs]
    for _ in range(repeat):
        for run, seen in zip(runs, times):
            seen.append(run())
    return [statistics.median(seen) for seen in times]


def _median_pair(repeat: int, a, b) -> tuple[float, float]:
    """Medians of ``a()`` and ``b()`` over ``repeat`` interleaved calls (each returns seconds)."""
    return tuple(_medians(repeat, a, b))


# -- peers ------------------------------------------------------------------------------------

def _simpy_s(n: int, k: int) -> float:
    """Wall seconds of ``n`` SimPy processes each waiting ``k`` timeouts, their creation
    included, as coopsim's figure includes spawning its ranks (``coopsim_wait_s``)."""
    import simpy

    env = simpy.Environment()

    def proc(env):
        for _ in range(k):
            yield env.timeout(1)

    start = time.perf_counter()
    for _ in range(n):
        env.process(proc(env))
    env.run()
    return time.perf_counter() - start


def _coopsim_timers_s(n: int, k: int) -> float:
    """Wall seconds of ``n`` ranks each waiting ``k`` timers (the scheduler bench's worker)."""
    return coopsim_wait_s(n, n * k) * n * k


def _threaded_pg_s(nranks: int, iters: int, numel: int) -> float:
    """PyTorch's in-process threaded process group (torch's own test harness)."""
    import torch
    import torch.distributed as dist
    from torch.testing._internal.distributed.multi_threaded_pg import (
        _install_threaded_pg,
        _uninstall_threaded_pg,
    )

    _install_threaded_pg()
    store = dist.HashStore()
    barrier = threading.Barrier(nranks + 1)
    done = threading.Barrier(nranks + 1)

    def worker(rank):
        dist.init_process_group("threaded", rank=rank, world_size=nranks, store=store)
        t = torch.ones(numel)
        barrier.wait()
        for _ in range(iters):
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        done.wait()
        dist.destroy_process_group()

    torch._C._distributed_c10d._set_thread_isolation_mode(True)
    threads = [threading.Thread(target=worker, args=(r,)) for r in range(nranks)]
    try:
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        done.wait()
        elapsed = time.perf_counter() - start
        for t in threads:
            t.join()
    finally:
        torch._C._distributed_c10d._set_thread_isolation_mode(False)
        _uninstall_threaded_pg()
    return elapsed


def _coopsim_all_reduce_s(nranks: int, iters: int, numel: int, model: str) -> float:
    marks = []

    def rank(r, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        t = ctx.ones(numel)
        dist.barrier()
        if r == 0:
            marks.append(time.perf_counter())
        for _ in range(iters):
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        t[0].item()
        if r == nranks - 1:
            marks.append(time.perf_counter())

    with coopsim.RuntimeContext("dgx_h100", ccl={"model": model}) as ctx:
        ctx.multiprocessing.spawn(rank, args=(ctx,), nprocs=nranks)
    return marks[1] - marks[0]


def _floor_s(bufs: list, iters: int, blocked: bool) -> float:
    """Wall seconds of ``iters`` all_reduce(MAX) of the separate float32 buffers ``bufs`` in
    plain numpy, each buffer its rank's input and output: reduced in rank order into a
    temporary and copied to every buffer, or (``blocked``) ``all_reduce_blocks``."""
    start = time.perf_counter()
    for _ in range(iters):
        if blocked:
            all_reduce_blocks(np.maximum, bufs, bufs)
            continue
        acc = np.maximum(bufs[0], bufs[1])
        for x in bufs[2:]:
            np.maximum(acc, x, out=acc)
        for x in bufs:
            np.copyto(x, acc)
    return time.perf_counter() - start


def _floor_line(repeat: int, iters: int, numel: int, threaded) -> str:
    """The floor line: both plain-numpy floors and ``threaded()`` (seconds of the same loop in
    the threaded process group), interleaved, and the best ratio separate buffers allow."""
    bufs = [aligned(np.ones, (numel,), np.float32) for _ in range(8)]  # as the ranks' ctx.ones(numel)
    naive, blocked, theirs = _medians(repeat, lambda: _floor_s(bufs, iters, False),
                                      lambda: _floor_s(bufs, iters, True), threaded)
    return (f"floor, 8 x {iters} all_reduce({numel:,} floats) in numpy on separate buffers: "
            f"naive {naive * 1e3:.1f} ms, blocked {blocked * 1e3:.1f} ms; threaded PG / best floor: "
            f"{theirs / min(naive, blocked):5.2f}x ({theirs * 1e3:.1f} ms), the most any model can show")


def _numpy_reduce_s(numel: int, nranks: int) -> float:
    inputs = np.stack([np.full(numel, float(r + 1), np.float32) for r in range(nranks)])
    start = time.perf_counter()
    np.add.reduce(inputs, axis=0)
    return time.perf_counter() - start


def _scale_s(nranks: int, model: str) -> float:
    topology = {"name": f"switch{nranks}", "max_devices": nranks, "device_kinds": {"gpu": {
        "memory_bytes": 1 << 34, "memory_bandwidth_GBps": 1000, "peak_flops": {"float32": 1e13},
        "launch_overhead_ns": 4000}}, "devices": [{"kind": "gpu", "count": nranks}],
        "links": [{"pattern": "switch", "bandwidth_GBps": 50, "latency_ns": 700}]}

    def rank(r, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        dist.barrier()
        t = ctx.ones(1)
        dist.all_reduce(t)
        t.item()

    start = time.perf_counter()
    with coopsim.RuntimeContext(topology, ccl={"model": model}) as ctx:
        ctx.multiprocessing.spawn(rank, args=(ctx,), nprocs=nranks)
    return time.perf_counter() - start


_PEAK = """
finally:
    import sys
    try:  # the peak of this process's own memory: ru_maxrss would count the parent's too (fork)
        with open("/proc/self/status") as status:
            kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except OSError:
        import resource
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stderr.write(f"\\npeak_kib={kib}\\n")
"""


def _child(code: str) -> tuple[str, float]:
    """Run ``code`` in a child Python; its stdout and its own peak RSS (MiB)."""
    body = "try:\n" + "".join(f"    {line}\n" for line in code.splitlines()) + _PEAK
    child = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True)
    if child.returncode:
        raise RuntimeError(f"python -c {code!r} exited {child.returncode}: {child.stderr[-2000:]}")
    kib = int(child.stderr.rsplit("peak_kib=", 1)[1])
    return child.stdout, kib / 1024


def _scale_child(nranks: int, model: str) -> tuple[float, float]:
    """``_scale_s`` in a child process (so that its peak RSS is its own): seconds, MiB."""
    out, rss = _child(f"from benches.perf import _scale_s\nprint(_scale_s({nranks}, {model!r}))")
    return float(out), rss


def _main_job() -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the README's main job, in a child process."""
    start = time.perf_counter()
    _, rss = _child("import runpy, sys\nsys.argv = ['benches.allreduce']\n"
                    "runpy.run_module('benches.allreduce', run_name='__main__')")
    return time.perf_counter() - start, rss


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.perf", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs; medians are printed")
    parser.add_argument("--huge", action="store_true", help="also 100,000 ranks (analytic)")
    parser.add_argument("--main-job", action="store_true", help="also time the README's main job")
    args = parser.parse_args(argv)
    r = args.repeat
    print(f"# coopsim speed against its peers: medians of {r} interleaved runs")

    for n in (1, 8, 100, 1000):
        raw, wait = _median_pair(r, lambda: raw_round_trip_s(100_000, n), lambda: coopsim_wait_s(n, 100_000))
        print(f"wait / raw greenlet round trip, {n:>4} ranks: {wait / raw:5.2f}x "
              f"({wait * 1e9:.0f} ns / {raw * 1e9:.0f} ns)")

    if importlib.util.find_spec("simpy") is None:
        print("simpy: skipped (SimPy is not installed: pip install simpy)")
    else:
        for n, k in ((100, 1000), (1000, 100)):
            ours, theirs = _median_pair(r, lambda: _coopsim_timers_s(n, k), lambda: _simpy_s(n, k))
            print(f"timer events/s, coopsim / SimPy, {n} x {k}: {theirs / ours:5.2f}x "
                  f"({n * k / ours:,.0f} / {n * k / theirs:,.0f} per s)")

    if importlib.util.find_spec("torch") is None:
        print("threaded: skipped (PyTorch is not installed: pip install 'coopsim[torch]')")
    else:
        for iters, numel in ((100, 1), (20, 262_144)):
            for model in ("transfer", "analytic"):
                ours, theirs = _median_pair(r, lambda: _coopsim_all_reduce_s(8, iters, numel, model),
                                            lambda: _threaded_pg_s(8, iters, numel))
                print(f"threaded PG / coopsim, 8 x {iters} all_reduce({numel:,} floats), {model}: "
                      f"{theirs / ours:5.2f}x ({theirs * 1e3:.1f} ms / {ours * 1e3:.1f} ms)")
        print(_floor_line(r, 20, 262_144, lambda: _threaded_pg_s(8, 20, 262_144)))

    for model in ("transfer", "analytic"):
        ours, ref = _median_pair(r, lambda: _coopsim_all_reduce_s(8, 1, 1 << 20, model),
                                 lambda: _numpy_reduce_s(1 << 20, 8))
        print(f"1M-float 8-rank all_reduce / numpy.add.reduce, {model}: {ours / ref:5.2f}x")

    for nranks, models in ((4096, ("transfer", "analytic")), (100_000, ("analytic",))):
        if nranks > 4096 and not args.huge:
            continue
        for model in models:
            seconds, rss = _scale_child(nranks, model)
            print(f"init + barrier + all_reduce, {nranks:,} ranks, {model}: {seconds:.2f} s, "
                  f"{rss:,.0f} MiB peak RSS")
    start = time.perf_counter()
    build_schedule("all_reduce", "ring", 1024, 1024)
    print(f"1,024-rank ring all_reduce schedule build: {time.perf_counter() - start:.2f} s")

    if args.main_job:
        wall, rss = _main_job()
        print(f"python -m benches.allreduce: {wall:.1f} s wall, {rss:,.0f} MiB peak RSS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
