"""python -m benches.broadcast: nccl-tests' broadcast_perf on a simulated machine (docs/adr/0010)."""

from benches import collective_bench


def main(argv=None) -> int:
    return collective_bench.main(argv, collective="broadcast")


if __name__ == "__main__":
    raise SystemExit(main())
