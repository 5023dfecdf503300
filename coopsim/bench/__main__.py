"""``python -m coopsim.bench BENCH [flags]``: see ``coopsim.bench.cli``."""

from coopsim.bench.cli import run

if __name__ == "__main__":
    raise SystemExit(run())
