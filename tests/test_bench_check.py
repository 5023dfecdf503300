"""The bench's main job holds only what it must (docs/adr/0028): times from timing-only
contexts, equal to a run with data; ``#wrong`` from one context with data per section, whose
check must still catch every wrong element.

The expected values are checked against a plain reference written here: every rank's whole
input laid out, each collective computed by its definition.
"""

import tracemalloc

import numpy as np
import pytest

from coopsim.bench import calls, check, cli, data as bench_data
from coopsim.bench.options import COLLECTIVES, parse_args
from coopsim.bench.runner import measure
from coopsim.context import RuntimeContext


def config(argv, collective="all_reduce"):
    return parse_args(argv, COLLECTIVES[collective], "test")


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize("collective, argv, algorithm", [
    ("all_reduce", ["-b", "64K", "-e", "256K", "-f", "4"], None),  # ring, LL then LL128
    ("all_reduce", ["-b", "256K", "-e", "256K"], "nvls"),
    ("all_reduce", ["-b", "64K", "-e", "64K", "-z", "1", "-c", "2", "-o", "avg", "-d", "bfloat16"], None),
    ("all_reduce", ["-b", "1M", "-e", "1M", "--model", "analytic", "-n", "2", "-w", "0"], None),
    ("reduce_scatter", ["-b", "256K", "-e", "256K", "-o", "max"], None),
    ("all_gather", ["-b", "64K", "-e", "64K"], None),
    ("alltoall", ["-b", "64K", "-e", "64K"], None),
    ("sendrecv", ["-b", "64K", "-e", "64K"], None),
    ("broadcast", ["-b", "64K", "-e", "64K", "-r", "3"], None),
    ("reduce", ["-b", "64K", "-e", "64K", "-r", "5", "-o", "prod"], None),
])
def test_timing_only_run_gives_the_times_of_a_run_with_data(collective, argv, algorithm):
    cfg = config(argv, collective)
    ccl = {"model": cfg.model, **({"algorithms": {cfg.collective.ccl: algorithm}} if algorithm else {})}
    for size in cfg.sizes:
        for in_place in (False, True):
            seen = []
            for timing_only in (True, False):
                with RuntimeContext(cfg.topology, ccl=ccl, timing_only=timing_only) as ctx:
                    seen.append((measure(ctx, cfg, size, in_place), ctx.sim.now_ns()))
            assert seen[0] == seen[1], (size, in_place)  # the time, and the clock at the end


def reference_outputs(cfg, d: bench_data.Data, size: int) -> list:
    """Every rank's expected output, computed plainly from every rank's whole input."""
    p, c, name, op = cfg.nranks, cfg.count(size), cfg.collective.name, cfg.op
    ins = [np.resize(x, cfg.input_elements(size)).astype(np.int64) for x in d.patterns]
    ufunc = {"sum": np.add, "avg": np.add, "prod": np.multiply, "min": np.minimum,
             "max": np.maximum}[op]
    reduced = ufunc.reduce(np.stack(ins))
    if op == "avg":
        reduced = reduced / p if cfg.datatype.is_floating_point else reduced // p
    outs = {
        "all_reduce": lambda r: reduced,
        "reduce": lambda r: reduced if r == cfg.root else None,
        "reduce_scatter": lambda r: reduced[r * c:(r + 1) * c],
        "broadcast": lambda r: ins[cfg.root],
        "all_gather": lambda r: np.concatenate(ins),
        "alltoall": lambda r: np.concatenate([x[r * c:(r + 1) * c] for x in ins]),
        "sendrecv": lambda r: ins[(r - 1) % p],
    }[name]
    return [None if outs(r) is None else d._as_dtype(outs(r)) for r in range(p)]


@pytest.mark.parametrize("collective, op, dtype", [
    ("all_reduce", "sum", "float"), ("all_reduce", "avg", "half"), ("all_reduce", "prod", "int32"),
    ("all_reduce", "avg", "int64"), ("reduce", "min", "bfloat16"),
    ("reduce_scatter", "max", "float"), ("reduce_scatter", "avg", "bfloat16"),
    ("broadcast", "sum", "float"), ("all_gather", "sum", "half"), ("alltoall", "sum", "int32"),
    ("sendrecv", "sum", "float"),
])
def test_expected_pieces_equal_a_plain_reference_and_count_each_wrong_element(
        monkeypatch, collective, op, dtype):
    monkeypatch.setattr(bench_data, "PERIOD", 13)  # many periods, every phase
    reduces = COLLECTIVES[collective].reduces
    cfg = config(["-b", "64", "-e", "4K", "-f", "4", "-d", dtype] + (["-o", op] if reduces else [])
                 + (["-r", "2"] if COLLECTIVES[collective].rooted else []), collective)
    d = bench_data.Data(cfg)
    assert d.period == 13
    rng = np.random.default_rng(0)
    for size in cfg.sizes:
        for rank, want in enumerate(reference_outputs(cfg, d, size)):
            pieces = d.expected(size, rank)
            if want is None:
                assert pieces is None
                continue
            assert bench_data.count_wrong(want, pieces) == 0
            spoiled = want.copy()
            where = rng.choice(want.size, size=min(5, want.size), replace=False)
            spoiled[where] += 1
            assert bench_data.count_wrong(spoiled, pieces) == where.size, (size, rank)
            assert bench_data.count_wrong(want[::-1].copy(), pieces) == np.count_nonzero(
                want[::-1] != want)


def spoiling(monkeypatch, spoil):
    """Make the check's collective call ``spoil(ctx, rank, recv)`` after it (device ops)."""
    launch = calls.launch

    def spoiled(ctx, cfg, size, in_place, rank, send, recv):
        launch(ctx, cfg, size, in_place, rank, send, recv)
        spoil(ctx, rank, recv)

    monkeypatch.setattr(check, "launch", spoiled)


@pytest.mark.parametrize("collective", ["all_reduce", "reduce_scatter", "all_gather"])
def test_the_check_counts_every_corrupted_element(capsys, monkeypatch, collective):
    monkeypatch.setattr(bench_data, "PERIOD", 1009)
    argv = ["-b", "128K", "-e", "512K", "-f", "4", "-n", "1", "-w", "0"]

    def spoil(ctx, rank, recv):  # rank 3: 2 elements; rank 5: a run of 7 beyond a period
        if rank == 3:
            recv[0:1].add_(1)
            recv[-1:].add_(1)
        elif rank == 5:
            recv[1500:1507].add_(2)

    spoiling(monkeypatch, spoil)
    assert cli.main(argv, collective=collective) == 1
    out = capsys.readouterr().out
    assert [(r[8], r[12]) for r in rows(out)] == [("9", "9"), ("9", "9")]
    assert "# Out of bounds values : 4 FAILED" in out


def test_an_output_never_written_is_wrong_wherever_the_result_is_not_zero(capsys, monkeypatch):
    cfg = config(["-b", "4K", "-e", "4K"])
    d = bench_data.Data(cfg)
    want = reference_outputs(cfg, d, 4096)[6]
    spoiling(monkeypatch, lambda ctx, rank, recv: recv.zero_() if rank == 6 else None)
    assert cli.main(["-b", "4K", "-e", "4K", "-n", "1", "-w", "0"]) == 1
    row = rows(capsys.readouterr().out)[0]
    assert row[8] == row[12] == str(np.count_nonzero(want))


def peak_bytes(argv) -> int:
    """The most numpy (and Python) memory held at once while the bench runs ``argv``."""
    tracemalloc.start()
    try:
        assert cli.main(argv) == 0
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_without_checks_the_run_holds_no_data(capsys):
    peak = peak_bytes(["-b", "64M", "-e", "64M", "-n", "1", "-w", "0", "-c", "0"])
    assert peak < 16 << 20  # 8 ranks x 2 buffers x 64 MiB, had they held data: 1 GiB
    assert all(r[8] == r[12] == "N/A" for r in rows(capsys.readouterr().out))


def test_checks_hold_two_buffers_per_rank_of_the_largest_size_and_no_copy(capsys, monkeypatch):
    monkeypatch.setattr(bench_data, "PERIOD", 1009)  # the patterns' memory: negligible here
    peak = peak_bytes(["-b", "1M", "-e", "4M", "-n", "1", "-w", "0", "-c", "2"])
    buffers = 8 * 2 * (4 << 20)  # ranks x (send, recv) x the largest size, reused for all
    assert buffers <= peak < buffers + (2 << 20)  # not even one copy of one rank's output
    assert len(rows(capsys.readouterr().out)) == 3
