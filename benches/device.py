"""python -m benches.device: the wall-clock cost of device tensor ops against numpy.

Prints, measured in one run:
- a 1-million-element float32 add and a 1024x1024 float32 matmul through coopsim, each
  timed as the op plus the host read that waits for it (``out[-1].item()``: the barrier,
  which drives the engine until the op's numbers are computed), as a ratio to the same
  numpy call (``a + b``, ``a @ b``; target: at most 1.5x);
- the per-op overhead for tiny (1-element) tensors in microseconds: an add with its read,
  and an add alone (enqueue only, the asynchronous cost a program pays per op).

Every figure is the best of ``--repeat`` interleaved runs, since shared machines are noisy.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import coopsim


def best_per_call(fn, calls: int) -> float:
    """Wall seconds per call of ``fn`` over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def compare(numpy_fn, coopsim_fn, calls: int, repeat: int) -> tuple[float, float]:
    """Best seconds per call of each, from ``repeat`` interleaved measurements."""
    numpy_fn(), coopsim_fn()  # warm up
    np_times, sim_times = [], []
    for _ in range(repeat):
        np_times.append(best_per_call(numpy_fn, calls))
        sim_times.append(best_per_call(coopsim_fn, calls))
    return min(np_times), min(sim_times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.device", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="interleaved repetitions; the best is kept")
    args = parser.parse_args(argv)

    ctx = coopsim.RuntimeContext()
    rng = np.random.default_rng(0)
    rows = []

    a, b = rng.random(1 << 20, dtype=np.float32), rng.random(1 << 20, dtype=np.float32)
    x, y = ctx.from_numpy(a), ctx.from_numpy(b)
    rows.append(("add, 1M float32 (op + read)", *compare(lambda: a + b, lambda: (x + y)[-1].item(), 50, args.repeat)))

    m, n = rng.random((1024, 1024), dtype=np.float32), rng.random((1024, 1024), dtype=np.float32)
    p, q = ctx.from_numpy(m), ctx.from_numpy(n)
    rows.append(("matmul, 1024x1024 float32 (op + read)",
                 *compare(lambda: m @ n, lambda: (p @ q)[-1, -1].item(), 5, args.repeat)))

    s, t = np.ones(1, np.float32), np.ones(1, np.float32)
    u, v = ctx.ones(1), ctx.ones(1)
    tiny_read = compare(lambda: s + t, lambda: (u + v).item(), 5000, args.repeat)
    tiny_async = compare(lambda: s + t, lambda: u + v, 5000, args.repeat)
    ctx.cuda.synchronize()

    print(f"# coopsim device benchmark (best of {args.repeat} interleaved runs)")
    print(f"{'measurement':<42}{'numpy us':>10}{'coopsim us':>12}{'ratio':>8}")
    for name, np_s, sim_s in rows:
        print(f"{name:<42}{np_s * 1e6:>10.1f}{sim_s * 1e6:>12.1f}{sim_s / np_s:>8.2f}")
    for name, (np_s, sim_s) in (("add, 1 element (op + read)", tiny_read), ("add, 1 element (enqueue only)", tiny_async)):
        print(f"{name:<42}{np_s * 1e6:>10.1f}{sim_s * 1e6:>12.1f}{'':>8}")
    print(f"per-op overhead, tiny tensors: {(tiny_read[1] - tiny_read[0]) * 1e6:.1f} us with the read, "
          f"{(tiny_async[1] - tiny_async[0]) * 1e6:.1f} us enqueue only")
    ctx.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
