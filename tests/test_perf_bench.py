"""``python -m benches.perf`` measures scale runs and the main job in child processes, so that
each peak RSS is the child's own; the plumbing must carry the child's figures and failures."""

from __future__ import annotations

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
