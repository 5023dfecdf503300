"""python -m benches.allreduce: nccl-tests' all_reduce_perf on a simulated machine (docs/adr/0010).

A checkout's spelling of ``python -m coopsim.bench allreduce``: the same library, the same table."""

from coopsim.bench import cli


def main(argv=None) -> int:
    return cli.main(argv, collective="all_reduce", prog="python -m benches.allreduce")


if __name__ == "__main__":
    raise SystemExit(main())
