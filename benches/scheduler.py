"""python -m benches.scheduler: the cost of a worker wait, and spawning 10,000 ranks.

Prints, measured in one run:
- a raw greenlet round trip (main -> greenlet -> main), the physical floor;
- one coopsim worker wait (create a timer, block, drain, resume), as a ratio to the raw
  round trip (issue 16 target: at most 2.5x), for several rank counts;
- wall time and peak memory of spawning 10,000 ranks that each wait 10 times.

Every figure is the best of ``--repeat`` interleaved runs, since shared machines are noisy.
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

from greenlet import getcurrent, greenlet

import coopsim


def raw_round_trip_s(n: int, ngreenlets: int = 1) -> float:
    """main -> greenlet -> main, round robin over ``ngreenlets`` greenlets (cache effects
    of many stacks included, as in a spawn of that many ranks)."""
    main = getcurrent()

    def bounce():
        switch = main.switch
        while True:
            switch()

    switches = [greenlet(bounce).switch for _ in range(ngreenlets)]
    rounds = max(1, n // ngreenlets)
    start = time.perf_counter()
    for _ in range(rounds):
        for switch in switches:
            switch()
    elapsed = time.perf_counter() - start
    for switch in switches:
        switch.__self__.throw()  # end them
    return elapsed / (rounds * ngreenlets)


def _waiter(rank, ctx, n):
    wait, timer = ctx.wait, ctx.sim.timer
    for _ in range(n):
        wait(timer(1))


def coopsim_wait_s(nranks: int, total_waits: int) -> float:
    n = max(1, total_waits // nranks)
    with coopsim.RuntimeContext() as ctx:
        start = time.perf_counter()
        ctx.multiprocessing.spawn(_waiter, args=(ctx, n), nprocs=nranks)
        return (time.perf_counter() - start) / (nranks * n)


def spawn_many(nranks: int, waits: int) -> tuple[float, float]:
    """Wall seconds, and the virtual end time, of ``nranks`` ranks each waiting ``waits`` times."""
    with coopsim.RuntimeContext() as ctx:
        start = time.perf_counter()
        ctx.multiprocessing.spawn(_waiter, args=(ctx, waits), nprocs=nranks)
        return time.perf_counter() - start, ctx.engine.now_ns


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.scheduler", description=__doc__.splitlines()[0])
    parser.add_argument("--waits", type=int, default=100_000, help="worker waits per measurement")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved repetitions; the best is kept")
    parser.add_argument("--ranks", type=int, default=10_000, help="ranks in the spawn-many measurement")
    args = parser.parse_args(argv)

    print("# coopsim scheduler benchmark (best of %d interleaved runs)" % args.repeat)
    print("# ratio = one worker wait (create a timer, block, drain, resume) / one raw greenlet")
    print("# round trip over as many greenlets as ranks; target <= 2.5x")
    print(f"{'ranks':>6}{'raw ns':>10}{'wait ns':>10}{'ratio':>8}")
    for nranks in (1, 8, 100, 1000):
        raws, sims = [], []
        for _ in range(args.repeat):
            raws.append(raw_round_trip_s(args.waits, nranks))
            sims.append(coopsim_wait_s(nranks, args.waits))
        raw, sim = min(raws), min(sims)
        print(f"{nranks:>6}{raw * 1e9:>10.0f}{sim * 1e9:>10.0f}{sim / raw:>8.2f}")

    tracemalloc.start()
    wall, end_ns = spawn_many(args.ranks, 10)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    walls = [spawn_many(args.ranks, 10)[0] for _ in range(max(1, args.repeat - 2))]
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nspawn {args.ranks} ranks x 10 waits: wall {min(walls):.3f} s "
          f"(virtual end {end_ns:g} ns), peak traced memory {peak / 2**20:.1f} MiB, "
          f"process max RSS {maxrss_mb:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
