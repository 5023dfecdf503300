"""``python -m benches.tp``: the table's columns, JSON, --check and argument errors."""

import json

import pytest

from benches import tp as bench

SMALL = ["--hidden", "64", "--ffn", "256", "--seq", "64", "--tp", "1,2,4"]


def test_json_rows_and_check(capsys):
    assert bench.main(SMALL + ["--json", "--check", "--sequence-parallel"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = doc["rows"]
    assert [r["tp"] for r in rows] == [1, 2, 4]
    assert rows[0]["forward"]["communication_ns"] == 0 < rows[1]["forward"]["communication_ns"]
    assert rows[2]["memory_bytes"] < rows[1]["memory_bytes"] < rows[0]["memory_bytes"]
    for r in rows:
        for phase in ("forward", "backward"):
            p = r[phase]
            assert max(p["compute_ns"], p["communication_ns"]) <= p["total_ns"] * (1 + 1e-9)
    for r in rows[1:]:  # sequence parallel: the backward's async all-gather and reduce-scatter
        b = r["backward"]  # run on the NCCL stream, overlapping the GEMMs (as in Megatron)
        assert b["compute_ns"] + b["communication_ns"] > b["total_ns"] * (1 + 1e-9)
    assert all(err < 1e-6 for err in doc["check_max_abs_error"].values())


def test_table_shows_speed_up_over_tp1(capsys):
    assert bench.main(SMALL) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "speed-up" in lines[2]
    assert lines[3].split()[0] == "1" and lines[3].split()[-1] == "1.00"


def test_indivisible_sizes_are_refused(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--ffn", "100", "--tp", "8"])
    assert "--ffn 100 is not divisible by --tp 8" in capsys.readouterr().err


def test_more_ranks_than_devices_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--tp", "1,16"])
    assert "--tp 16: topology 'dgx_h100' has only 8 devices" in capsys.readouterr().err
