"""python -m benches.alltoall: nccl-tests' alltoall_perf on a simulated machine (docs/adr/0010).

A checkout's spelling of ``python -m coopsim.bench alltoall``: the same library, the same table."""

from coopsim.bench import cli


def main(argv=None) -> int:
    return cli.main(argv, collective="alltoall", prog="python -m benches.alltoall")


if __name__ == "__main__":
    raise SystemExit(main())
