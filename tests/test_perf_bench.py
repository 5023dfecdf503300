"""``python -m benches.perf`` measures scale runs and the main job in child processes, so that
each peak RSS is the child's own; the plumbing must carry the child's figures and failures."""

from __future__ import annotations

import re

import numpy as np
import pytest

from benches import perf


def test_scale_child_reports_the_childs_seconds_and_its_own_peak_rss():
    seconds, rss = perf._scale_child(16, "analytic")
    assert 0 < seconds < 60
    assert 10 < rss < 2_000  # MiB: a Python with numpy, not a figure in KiB or bytes


def test_a_childs_peak_rss_is_its_own_not_its_parents():
    ballast = bytearray(300 << 20)  # the parent holds 300 MiB: a forked child's ru_maxrss would show it
    ballast[::4096] = b"x" * len(ballast[::4096])
    _, small = perf._child("print(1)")
    _, big = perf._child("b = bytearray(200 << 20)\nb[::4096] = b'x' * len(b[::4096])")
    assert small < 100 and 200 < big < 300 + small
    del ballast


def test_a_failing_child_raises_naming_its_code():
    with pytest.raises(RuntimeError, match=r"python -c 'raise SystemExit\(3\)' exited 3"):
        perf._child("raise SystemExit(3)")


def test_both_numpy_floors_compute_the_all_reduce_they_time():
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1 << 17) + 5).astype(np.float32) for _ in range(8)]  # 4 blocks + 5
    expected = np.maximum.reduce(inputs)
    for blocked in (False, True):
        bufs = [x.copy() for x in inputs]
        assert 0 < perf._floor_s(bufs, 1, blocked) < 10
        assert all(np.array_equal(buf, expected) for buf in bufs), blocked


def test_the_floor_line_reports_threaded_pg_over_the_faster_floor():
    calls = []

    def threaded():
        calls.append(1)
        return 1.0  # seconds: far above either floor of 4 all_reduces

    line = perf._floor_line(3, 4, 262_144, threaded)
    assert len(calls) == 3  # interleaved with the floors, once per repeat
    found = re.search(r"naive ([\d.]+) ms, blocked ([\d.]+) ms; threaded PG / best floor: +([\d.]+)x", line)
    naive, blocked, ratio = found.groups()
    best_s = min(float(naive), float(blocked)) / 1e3
    assert float(ratio) == pytest.approx(1.0 / best_s, rel=0.1)  # the printed figures round
