"""python -m benches.allreduce: nccl-tests' all_reduce_perf on a simulated machine (docs/adr/0010)."""

from benches import collective_bench


def main(argv=None) -> int:
    return collective_bench.main(argv, collective="all_reduce")


if __name__ == "__main__":
    raise SystemExit(main())
