"""python -m benches.reduce_scatter: nccl-tests' reduce_scatter_perf on a simulated machine (docs/adr/0010).

A checkout's spelling of ``python -m coopsim.bench reduce_scatter``: the same library, the same table."""

from coopsim.bench import cli


def main(argv=None) -> int:
    return cli.main(argv, collective="reduce_scatter", prog="python -m benches.reduce_scatter")


if __name__ == "__main__":
    raise SystemExit(main())
