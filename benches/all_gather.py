"""python -m benches.all_gather: nccl-tests' all_gather_perf on a simulated machine (docs/adr/0010).

A checkout's spelling of ``python -m coopsim.bench all_gather``: the same library, the same table."""

from coopsim.bench import cli


def main(argv=None) -> int:
    return cli.main(argv, collective="all_gather", prog="python -m benches.all_gather")


if __name__ == "__main__":
    raise SystemExit(main())
