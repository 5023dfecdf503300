"""python -m benches.sendrecv: nccl-tests' sendrecv_perf on a simulated machine (docs/adr/0010).

A checkout's spelling of ``python -m coopsim.bench sendrecv``: the same library, the same table."""

from coopsim.bench import cli


def main(argv=None) -> int:
    return cli.main(argv, collective="sendrecv", prog="python -m benches.sendrecv")


if __name__ == "__main__":
    raise SystemExit(main())
