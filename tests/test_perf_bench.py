"""``python -m benches.perf`` measures scale runs and the main job in child processes, so that
each peak RSS is the child's own; the plumbing must carry the child's figures and failures."""

from __future__ import annotations

import pytest

from benches import perf


def test_scale_child_reports_the_childs_seconds_and_its_own_peak_rss():
    seconds, rss = perf._scale_child(16, "analytic")
    assert 0 < seconds < 60
    assert 10 < rss < 2_000  # MiB: a Python with numpy, not the parent's figure in KiB or bytes


def test_a_failing_child_raises_naming_its_command():
    with pytest.raises(RuntimeError, match=r"python -c raise SystemExit\(3\) exited 3"):
        perf._child(["-c", "raise SystemExit(3)"])
