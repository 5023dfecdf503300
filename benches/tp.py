"""python -m benches.tp: a Megatron ParallelMLP's forward and backward per tensor-parallel size.

For a topology and a layer shape, prints per TP size the forward and backward virtual time of
the MLP (column -> GeLU -> row), split into compute and communication (one stream a device:
collectives do not overlap compute, as the program issues them), the device memory in use
per rank, and the speed-up of forward + backward over TP=1. The runs are timing-only
(shapes, no data: docs/adr/0020-timing-only-tensors.md). ``--check`` first runs small shapes
with data and compares every output and input-gradient element with the unsplit numpy layer.
See ``coopsim.tp.measure`` for what is measured, and the README ("Tensor parallelism").
"""

from __future__ import annotations

import argparse
import functools
import json

from coopsim.context import RuntimeContext
from coopsim.tp.measure import check_mlp, measure_mlp

DTYPES = ("bfloat16", "float16", "float32")


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tp must be a comma-separated list of ints, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"--tp sizes must be >= 1, got {text!r}")
    return sizes


def _table(rows: list[dict], args) -> str:
    head = (f"# ParallelMLP hidden={args.hidden} ffn={args.ffn} seq={args.seq} batch={args.batch} "
            f"dtype={args.dtype} sequence_parallel={args.sequence_parallel} on {args.topology}\n"
            f"# times in virtual us; comm = collectives, on the NCCL stream (they may overlap comp); memory per rank in GiB\n"
            f"{'tp':>4}{'fwd':>11}{'fwd comp':>11}{'fwd comm':>11}{'bwd':>11}{'bwd comp':>11}"
            f"{'bwd comm':>11}{'memory':>9}{'speed-up':>10}")
    base = None
    lines = [head]
    for r in rows:
        f, b = r["forward"], r["backward"]
        total = f["total_ns"] + b["total_ns"]
        base = base if base is not None else (total if r["tp"] == 1 else None)
        speed = f"{base / total:>10.2f}" if base else f"{'-':>10}"
        lines.append(f"{r['tp']:>4}" + "".join(f"{v / 1e3:>11.1f}" for v in (
            f["total_ns"], f["compute_ns"], f["communication_ns"],
            b["total_ns"], b["compute_ns"], b["communication_ns"]))
            + f"{r['memory_bytes'] / 2**30:>9.2f}" + speed)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.tp", description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="dgx_h100", help="bundled name or YAML path (default dgx_h100)")
    parser.add_argument("--hidden", type=int, default=8192)
    parser.add_argument("--ffn", type=int, default=28672)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    parser.add_argument("--tp", type=_sizes, default=[1, 2, 4, 8], help="comma-separated TP sizes (default 1,2,4,8)")
    parser.add_argument("--sequence-parallel", action="store_true", help="Megatron's sequence parallelism")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--check", action="store_true",
                        help="first verify small shapes with data against the unsplit numpy layer")
    args = parser.parse_args(argv)
    for tp in args.tp:
        for name in ("ffn", "seq"):
            if getattr(args, name) % tp:
                parser.error(f"--{name} {getattr(args, name)} is not divisible by --tp {tp}")

    new_context = functools.partial(RuntimeContext, topology=args.topology)
    try:
        with new_context() as probe:
            devices = probe.topology.num_devices
    except (OSError, ValueError) as e:
        parser.error(f"--topology {args.topology}: {e}")
    if max(args.tp) > devices:
        parser.error(f"--tp {max(args.tp)}: topology {args.topology!r} has only {devices} devices")
    checks = {}
    if args.check:
        for tp in args.tp:
            checks[tp] = check_mlp(new_context, tp, sequence_parallel=args.sequence_parallel)
            if checks[tp] > 1e-4:
                raise SystemExit(f"--check failed: TP={tp} differs from the unsplit layer by {checks[tp]:.3g}")
    rows = [measure_mlp(new_context, tp, hidden=args.hidden, ffn=args.ffn, seq=args.seq,
                        batch=args.batch, dtype=args.dtype, sequence_parallel=args.sequence_parallel)
            for tp in args.tp]
    if args.json:
        print(json.dumps({"args": {k: v for k, v in vars(args).items()}, "rows": rows,
                          "check_max_abs_error": checks or None}, indent=1))
        return 0
    print(_table(rows, args))
    for tp, err in checks.items():
        print(f"check TP={tp}: every element within {err:.2g} of the unsplit numpy layer (float32)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
