"""python -m benches.reduce: nccl-tests' reduce_perf on a simulated machine (docs/adr/0010).

A checkout's spelling of ``python -m coopsim.bench reduce``: the same library, the same table."""

from coopsim.bench import cli


def main(argv=None) -> int:
    return cli.main(argv, collective="reduce", prog="python -m benches.reduce")


if __name__ == "__main__":
    raise SystemExit(main())
