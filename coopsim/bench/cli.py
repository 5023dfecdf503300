"""The bench's command line: ``python -m coopsim.bench BENCH [flags]``, the console script
``coopsim-bench BENCH [flags]``, and ``main`` behind ``python -m benches.BENCH`` in a checkout.

BENCH is one of ``BENCHES`` (allreduce, all_gather, reduce_scatter, broadcast, reduce,
alltoall, sendrecv); the flags are nccl-tests' (docs/adr/0010). Exit status: 0, 1 if any
output was wrong, 2 for bad arguments.

This module is the bench's entry point: it is the one that names ``RuntimeContext``
(each size and placement is timed on a fresh timing-only context, the checks run on one
context with data per section); the library modules below it take a context factory.
"""

from __future__ import annotations

import difflib
import sys
import time

from coopsim.context import RuntimeContext
from coopsim.bench.data import Data
from coopsim.bench.options import BENCHES, COLLECTIVES, parse_args
from coopsim.bench.report import PLACEMENTS, header, plot, write_csv, write_json
from coopsim.bench.runner import run_section
from coopsim.engine.trace import write_chrome_trace


def main(argv=None, collective: str = "all_reduce", prog: str | None = None) -> int:
    """Run the bench of ``collective`` (a key of ``COLLECTIVES``) with command-line ``argv``;
    ``prog`` names the command in the header and the errors (default
    ``python -m coopsim.bench BENCH``). Returns the exit status."""
    wall_start = time.perf_counter()
    c = COLLECTIVES[collective]
    try:
        cfg = parse_args(argv, c, prog or f"python -m coopsim.bench {c.bench}")
    except SystemExit as e:  # argparse: --help (0) or a bad argument (2)
        return e.code if isinstance(e.code, int) else 2
    out = sys.stdout
    for line in header(cfg):
        print(line, file=out)
    data = Data(cfg) if cfg.check else None  # -c 0: no values anywhere
    rows, trace_events, state = [], [], {"injected": False}
    for k, algo in enumerate(cfg.algos):
        rows += run_section(cfg, data, k, algo, state, out, trace_events, RuntimeContext)
    results = [(row, place) for row in rows for place, _ in PLACEMENTS]
    failed = sum(1 for row, place in results if row[f"{place}_wrong"])
    avg_busbw = sum(row[f"{place}_busbw_GBps"] for row, place in results) / len(results)
    print(f"# Out of bounds values : {failed} {'FAILED' if failed else 'OK'}", file=out)
    print(f"# Avg bus bandwidth    : {avg_busbw:g}", file=out)
    print("#", file=out)
    if cfg.args.json:
        write_json(cfg.args.json, cfg, rows, {"out_of_bounds": failed, "avg_busbw_GBps": avg_busbw})
    if cfg.args.csv:
        write_csv(cfg.args.csv, rows)
    if cfg.args.trace:
        write_chrome_trace(cfg.args.trace, trace_events, topology=cfg.topology.name,
                           collective=cfg.collective.name)
    if cfg.args.plot:
        plot(cfg.args.plot, cfg, rows)
    print(f"# wall-clock time: {time.perf_counter() - wall_start:.2f} s (the simulation's run "
          f"time on this machine; every time above is virtual)", file=out)
    out.flush()
    return 1 if failed else 0


def usage(prog: str) -> str:
    lines = [f"usage: {prog} BENCH [flags]", "",
             "nccl-tests' *_perf tables on a simulated machine; times are virtual "
             "(docs/adr/0010-bench-output-contract.md).", "", "BENCH is one of:"]
    lines += [f"  {name:<16}{c.name}_perf" for name, c in BENCHES.items()]
    lines += ["", f"'{prog} BENCH --help' lists the flags, e.g. {prog} allreduce -b 8 -e 1M"]
    return "\n".join(lines) + "\n"


def run(argv=None, prog: str = "python -m coopsim.bench") -> int:
    """``prog BENCH [flags]``: dispatch to the bench named by the first argument."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(usage(prog))
        return 0
    if not argv or argv[0] not in BENCHES:
        got = f"unknown bench {argv[0]!r}" if argv else "missing the bench's name"
        close = difflib.get_close_matches(argv[0], BENCHES, n=1) if argv else []
        hint = f" (did you mean {close[0]}?)" if close else ""
        sys.stderr.write(f"{prog}: error: {got}: expected one of {', '.join(BENCHES)}"
                         f"{hint} (see --help)\n")
        return 2
    name = argv[0]
    return main(argv[1:], BENCHES[name].name, prog=f"{prog} {name}")


def console() -> int:
    """The ``coopsim-bench`` console script (pyproject ``[project.scripts]``)."""
    return run(prog="coopsim-bench")
