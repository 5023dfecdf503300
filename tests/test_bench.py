"""python -m coopsim.bench allreduce (python -m benches.allreduce in a checkout) and its
siblings: the output contract of ADR-0010, and the commands of ADR-0013.

Every test runs small sweeps in-process (``coopsim.bench.cli.main(argv)``); a few run the
commands as subprocesses, as a user would.
"""

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from coopsim.bench import cli, options, report

ROOT = Path(__file__).resolve().parent.parent
HEADER = [
    "#                                                              out-of-place"
    "                       in-place          ",
    "#       size         count      type   redop    root     time   algbw   busbw #wrong"
    "     time   algbw   busbw #wrong                algo   proto",
    "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)       "
    "     (us)  (GB/s)  (GB/s)       ",
]
FACTORS = {"all_reduce": lambda n: 2 * (n - 1) / n, "all_gather": lambda n: (n - 1) / n,
           "reduce_scatter": lambda n: (n - 1) / n, "alltoall": lambda n: (n - 1) / n,
           "broadcast": lambda n: 1.0, "reduce": lambda n: 1.0, "sendrecv": lambda n: 1.0}
MODULES = {"all_reduce": "allreduce", "all_gather": "all_gather",
           "reduce_scatter": "reduce_scatter", "broadcast": "broadcast", "reduce": "reduce",
           "alltoall": "alltoall", "sendrecv": "sendrecv"}


def run(capsys, argv, collective="all_reduce"):
    code = cli.main(argv, collective=collective)
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line and not line.startswith("#")]


def test_table_format_parsed_back(capsys, tmp_path):
    code, out, err = run(capsys, ["-b", "8", "-e", "1M", "-f", "8", "--json", str(tmp_path / "r.json")])
    assert code == 0 and err == ""
    lines = out.splitlines()
    start = lines.index(HEADER[0])
    assert lines[start:start + 3] == HEADER  # columns, order and units as all_reduce_perf
    rows = table_rows(out)
    assert [int(r[0]) for r in rows] == [8, 64, 512, 4096, 32768, 262144]
    n = 8
    for r in rows:
        size, count, dtype, redop, root = int(r[0]), int(r[1]), r[2], r[3], int(r[4])
        assert (count, dtype, redop, root) == (size // 4, "float", "sum", -1)
        for time_s, algbw_s, busbw_s, wrong in (r[5:9], r[9:13]):
            time_us, algbw, busbw = float(time_s), float(algbw_s), float(busbw_s)
            decimals = 2 if time_us < 100 else 1 if time_us < 10000 else 0
            assert time_s == f"{time_us:.{decimals}f}"
            # algbw = size / time (GB = 1e9 B); busbw = algbw x 2(n-1)/n, within print rounding
            slack = 10 ** -decimals / 2 / time_us
            expect = size / (time_us * 1e3)
            assert abs(algbw - expect) <= 0.005 + expect * slack
            assert abs(busbw - expect * 2 * (n - 1) / n) <= 0.005 + 2 * expect * slack
            assert wrong == "0"
        assert r[13:] == ["ring", "LL"]  # what ran at each size: NCCL's choice on dgx_h100 up to 1 MB
    data = json.loads((tmp_path / "r.json").read_text())
    assert {(row["algo"], row["proto"]) for row in data["rows"]} == {("ring", "LL")}
    for row in data["rows"]:  # the unrounded numbers follow the formulas exactly
        for place in ("out_of_place", "in_place"):
            algbw = row["size_B"] / (row[f"{place}_time_us"] * 1e3)
            assert row[f"{place}_algbw_GBps"] == pytest.approx(algbw, rel=1e-12)
            assert row[f"{place}_busbw_GBps"] == pytest.approx(algbw * 2 * (n - 1) / n, rel=1e-12)
    busbws = [row[f"{p}_busbw_GBps"] for row in data["rows"] for p in ("out_of_place", "in_place")]
    assert lines[-4] == "# Out of bounds values : 0 OK"
    assert lines[-3] == f"# Avg bus bandwidth    : {sum(busbws) / len(busbws):g}"
    assert lines[-1].startswith("# wall-clock time: ")
    header = "\n".join(lines[:start])
    for needed in ("topology: dgx_h100", "ranks: 8", "model: transfer",
                   "protocol: auto",
                   "algorithm: default (coopsim/configs/ccl.yaml's rules for this topology; the algo "
                   "and proto columns say what ran at each size)",
                   "busbw = algbw x 2(n-1)/n = 1.75"):
        assert needed in header


def test_proto_fixes_the_protocol_as_nccl_proto_and_large_all_reduce_runs_nvls(capsys, tmp_path):
    code, out, _ = run(capsys, ["-b", "4M", "-e", "4M", "-n", "1", "-w", "0", "--proto", "Simple"])
    assert code == 0 and "protocol: Simple" in out
    assert table_rows(out)[0][13:] == ["nvls", "Simple"]  # H100's in-switch reduction above 2 MB
    code, out, _ = run(capsys, ["-b", "8", "-e", "8", "-n", "1", "-w", "0", "--proto", "ideal"])
    assert code == 0 and table_rows(out)[0][14] == "ideal"  # no protocol model at all
    code, out, err = run(capsys, ["--proto", "LL64"])
    assert code == 2 and "--proto" in err


@pytest.mark.parametrize("collective", list(FACTORS))
def test_every_collective_has_its_count_and_busbw_factor(capsys, tmp_path, collective):
    n = 4
    unit = 4 * (n if collective in ("all_gather", "reduce_scatter", "alltoall") else 1)
    path = tmp_path / "r.json"
    code, out, _ = run(capsys, ["--nranks", str(n), "-b", str(unit), "-e", str(unit * 4096),
                                "-f", "64", "--json", str(path)], collective)
    assert f"# coopsim {collective}_perf (python -m coopsim.bench {MODULES[collective]})" in out
    data = json.loads(path.read_text())
    assert data["busbw_factor"] in ("2(n-1)/n", "(n-1)/n", "1")
    for row in data["rows"]:
        assert row["count"] == row["size_B"] // unit  # the count argument of the NCCL call
        assert row["redop"] == ("sum" if collective in ("all_reduce", "reduce_scatter", "reduce") else "none")
        assert row["root"] == (0 if collective in ("broadcast", "reduce") else -1)
        busbw = row["out_of_place_algbw_GBps"] * FACTORS[collective](n)
        assert row["out_of_place_busbw_GBps"] == pytest.approx(busbw, rel=1e-12)
        assert row["out_of_place_wrong"] == 0  # every out-of-place result is checked and right
        if collective in ("alltoall", "sendrecv"):
            assert row["in_place_wrong"] is None  # not checked, as nccl-tests
    assert code == (1 if any(r["in_place_wrong"] for r in data["rows"]) else 0)


def test_in_place_reduce_scatter_ring_is_right(capsys):
    code, out, _ = run(capsys, ["-b", "32", "-e", "32", "-n", "1", "-w", "0", "--algo", "ring"],
                       "reduce_scatter")
    assert code == 0, out


def test_module_entry_points_share_the_implementation(capsys):
    for collective, module in MODULES.items():
        mod = importlib.import_module(f"benches.{module}")
        assert mod.main(["-b", "4K", "-e", "4K", "-n", "1", "-w", "0", "-c", "0"]) == 0
        out = capsys.readouterr().out
        assert f"# coopsim {collective}_perf (python -m benches.{module})" in out
        assert len(table_rows(out)) == 1


def test_injected_wrong_element_fails_the_run(capsys):
    code, out, _ = run(capsys, ["-b", "8", "-e", "64", "-n", "1", "-w", "0", "--inject-error"])
    assert code == 1
    rows = table_rows(out)
    assert [r[8] for r in rows] == ["1", "0", "0", "0"]  # out-of-place #wrong: one element
    assert [r[12] for r in rows] == ["0"] * 4
    assert "# Out of bounds values : 1 FAILED" in out.splitlines()


def test_inject_error_is_hidden_from_help(capsys):
    assert run(capsys, ["--help"])[0] == 0
    assert "inject" not in capsys.readouterr().out


def test_check_disabled_prints_na(capsys):
    code, out, _ = run(capsys, ["-b", "8", "-e", "64", "-c", "0", "--inject-error"])
    assert code == 0
    assert all(r[8] == "N/A" and r[12] == "N/A" for r in table_rows(out))
    assert "# Out of bounds values : 0 OK" in out


def test_json_csv_round_trip(capsys, tmp_path):
    j, c = tmp_path / "r.json", tmp_path / "r.csv"
    code, out, _ = run(capsys, ["-b", "8", "-e", "4K", "-f", "8", "--algo", "ring,halving_doubling",
                                "--json", str(j), "--csv", str(c), "-c", "0"], "all_reduce")
    assert code == 0
    data = json.loads(j.read_text())
    assert data["columns"] == list(report.COLUMNS)
    assert report.read_csv(c) == data["rows"]  # the same rows, value for value
    printed = [line for line in out.splitlines() if line and not line.startswith("#")]
    assert [report.format_row(row) for row in data["rows"]] == printed  # and the same as the table
    assert [r["algorithm"] for r in data["rows"]] == ["ring"] * 4 + ["halving_doubling"] * 4


BAD = [
    (["-b", "12X"], "argument -b/--minbytes", "K, M or G"),
    (["-b", "1.3"], "argument -b/--minbytes", "whole number"),
    (["-b", "6"], "argument -b/--minbytes", "multiples of 4"),
    (["-e", "1K", "-b", "2K"], "argument -e/--maxbytes", "smaller than"),
    (["-e", "64G"], "argument -e/--maxbytes", "bytes per device"),
    (["-f", "0"], "argument -f/--stepfactor", ">= 1"),
    (["-f", "4", "-i", "8"], "argument -i/--stepbytes", "-f 1 -i"),
    (["-f", "1", "-i", "6"], "argument -i/--stepbytes", "multiple of 4"),
    (["-o", "xor"], "argument -o/--op", "sum, prod, min, max, avg".replace(", ", "', '")),
    (["-d", "double"], "argument -d/--datatype", "float, half, bfloat16, int32, int64"),
    (["-n", "0"], "argument -n/--iters", ">= 1"),
    (["-w", "-1"], "argument -w/--warmup_iters", ">= 0"),
    (["-c", "x"], "argument -c/--check", ">= 0"),
    (["-z", "2"], "argument -z/--blocking", "0, 1"),
    (["--topology", "nope"], "argument --topology", "dgx_h100"),
    (["--nranks", "9"], "argument --nranks", "1..8"),
    (["--algo", "foo"], "argument --algo", "halving_doubling, hierarchical, nvls, ring"),
    (["--algo", "hierarchical"], "argument --algo", "several nodes"),
    (["--model", "fast"], "argument --model", "'transfer', 'analytic'"),
    (["--json", "/nonexistent/r.json"], "argument --json", "does not exist"),
    (["--plot", "x.jpg"], "argument --plot", ".png"),
    (["--bogus"], "unrecognized arguments", "--bogus"),
]


@pytest.mark.parametrize("argv, argument, accepted", BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_values_exit_2_with_one_line_naming_the_argument(capsys, argv, argument, accepted):
    code, out, err = run(capsys, argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("python -m coopsim.bench allreduce: error: ")
    assert argument in err and accepted in err


@pytest.mark.parametrize("collective, argv, argument, accepted", [
    ("all_gather", ["-b", "8"], "argument -b/--minbytes", "multiples of 32"),
    ("reduce_scatter", ["-b", "40", "--nranks", "4"], "argument -b/--minbytes", "multiples of 16"),
    ("all_gather", ["-e", "16"], "argument -e/--maxbytes", "nranks x 4 B"),
    ("broadcast", ["-r", "8"], "argument -r/--root", "0..7"),
    ("sendrecv", ["--algo", "ring"], "argument --algo", "direct"),
])
def test_bad_values_of_the_siblings(capsys, collective, argv, argument, accepted):
    code, _, err = run(capsys, argv, collective)
    assert code == 2 and argument in err and accepted in err and err.count("\n") == 1


def test_plot_without_matplotlib_says_how_to_get_it(capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    code, out, err = run(capsys, ["--plot", "busbw.png"])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "pip install 'coopsim[plot]'" in err


def test_plot_draws_a_png(capsys, tmp_path):
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed (the optional extra: pip install 'coopsim[plot]')")
    path = tmp_path / "busbw.png"
    code, _, _ = run(capsys, ["-b", "8", "-e", "64K", "-f", "16", "-c", "0", "--algo",
                              "ring,halving_doubling", "--plot", str(path)])
    assert code == 0 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_run_on_a_small_sweep(capsys):
    code, out, err = run(capsys, ["-e", "1K"])  # every default but the largest size
    assert code == 0 and err == ""
    assert [int(r[0]) for r in table_rows(out)] == [8, 16, 32, 64, 128, 256, 512, 1024]
    assert "# topology: dgx_h100 " in out and "ranks: 8;" in out and "model: transfer" in out
    assert (f"warmup iters: {options.DEFAULT_WARMUP} iters: {options.DEFAULT_ITERS} validation: 1 "
            f"blocking: 0") in out
    assert "(nccl-tests: 20, 5)" in out  # the defaults that differ are stated


def test_progress_goes_to_stderr_only_on_a_terminal(capsys, monkeypatch):
    code, out, err = run(capsys, ["-b", "8", "-e", "64"])
    assert err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code2, out2, err2 = run(capsys, ["-b", "8", "-e", "64"])
    assert "(1 of 4 sizes)" in err2 and "sizes" not in out2
    assert out.splitlines()[:-1] == out2.splitlines()[:-1]


def test_c9_bench_output_is_deterministic(capsys, tmp_path):
    outputs, traces = [], []
    for k in range(2):
        trace = tmp_path / f"t{k}.json"
        code, out, _ = run(capsys, ["-b", "64", "-e", "8K", "-f", "8", "-o", "avg", "-d", "half",
                                    "--algo", "ring,double_binary_tree", "--trace", str(trace)])
        assert code == 0
        outputs.append(out.splitlines())
        traces.append(trace.read_bytes())
    assert outputs[0][-1].startswith("# wall-clock time") and outputs[1][-1].startswith("# wall-clock")
    assert outputs[0][:-1] == outputs[1][:-1]
    assert traces[0] == traces[1]


def test_python_m_benches_allreduce(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benches.allreduce", "-b", "8", "-e", "1K"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # not a terminal: no progress
    rows = table_rows(result.stdout)
    assert len(rows) == 8 and all(len(r) == 15 for r in rows)
    assert not any(math.isnan(float(r[5])) for r in rows)
