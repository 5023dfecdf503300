"""The suite guards itself: a per-test timeout that is really applied, and CI = README."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line.strip() for line in lines if line.strip().startswith("pip install")][:2]


def test_pytest_timeout_is_configured_in_pyproject(request):
    assert request.config.pluginmanager.hasplugin("timeout")
    configured = re.search(r"^timeout\s*=\s*(\d+)", (ROOT / "pyproject.toml").read_text(), re.M)
    assert configured, "pyproject.toml must set [tool.pytest.ini_options] timeout"
    assert request.config.getini("timeout") == configured.group(1)
    assert 0 < int(configured.group(1)) <= 300


HANGING_BODIES = {
    "busy": """
        def test_hangs():
            while True:
                pass
    """,
    "swallows_base_exception": """
        def test_hangs():
            while True:
                try:
                    while True:
                        pass
                except BaseException:
                    pass
    """,
}


@pytest.mark.parametrize("body", sorted(HANGING_BODIES))
def test_pytest_timeout_really_stops_a_hanging_test(pytester, body):
    """Run a hanging test under this project's own pytest settings, with a 1 s timeout. The
    thread method ends the run (exit code 1) even when the body swallows BaseException."""
    settings = (ROOT / "pyproject.toml").read_text()
    section = settings[settings.index("[tool.pytest.ini_options]"):]
    section = re.sub(r"^timeout\s*=.*$", "timeout = 1", section, flags=re.M)
    section = re.sub(r"^testpaths\s*=.*$", "", section, flags=re.M)
    pytester.makefile(".toml", pyproject=section)
    pytester.makepyfile(test_hang=HANGING_BODIES[body])
    result = pytester.runpytest_subprocess(timeout=30)  # a swallowed guard: pytester fails
    assert result.ret not in (0, None)
    assert "Timeout" in result.stdout.str() + result.stderr.str()


def test_ci_runs_the_readme_install_and_test_commands():
    commands = _readme_commands()
    assert len(commands) == 2, "the README starts with two pip install ... commands"
    main_job, tests = commands
    assert "python -m benches." in main_job
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci, f"{tests!r} must be a line of .ci/run"
    assert main_job in ci, f"{main_job!r} must be a line of .ci/run"
    assert "python3 -m venv .ci-venv" in ci
