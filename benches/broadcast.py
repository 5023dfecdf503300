"""python -m benches.broadcast: nccl-tests' broadcast_perf on a simulated machine (docs/adr/0010).

A checkout's spelling of ``python -m coopsim.bench broadcast``: the same library, the same table."""

from coopsim.bench import cli


def main(argv=None) -> int:
    return cli.main(argv, collective="broadcast", prog="python -m benches.broadcast")


if __name__ == "__main__":
    raise SystemExit(main())
