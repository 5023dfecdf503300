"""The package as installed (docs/adr/0013): the wheel holds the bundled configs and no
top-level ``benches``, the configs have one source, and the bench commands work outside a
checkout."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from coopsim.bench import cli
from coopsim.bench.options import BENCHES, COLLECTIVES, DATATYPES
from coopsim.topology import bundled_topologies

ROOT = Path(__file__).resolve().parent.parent


def _this_coopsim() -> dict:
    """The environment of a subprocess, run outside the checkout, that imports this
    checkout's coopsim (not another installed one)."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_wheel_holds_the_configs_and_no_benches_package(tmp_path):
    src = tmp_path / "src"  # build from a copy: the build writes build/ and *.egg-info/
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(ROOT / "coopsim", src / "coopsim", ignore=ignore)
    shutil.copytree(ROOT / "benches", src / "benches", ignore=ignore)  # present, not shipped
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                             str(tmp_path / "dist"), str(src)],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    [wheel] = (tmp_path / "dist").glob("coopsim-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "coopsim/configs/ccl.yaml" in names
    bundled = {f"coopsim/configs/topologies/{t}.yaml" for t in bundled_topologies()}
    assert len(bundled) >= 8 and bundled <= names
    assert {"coopsim/bench/__main__.py", "coopsim/bench/cli.py"} <= names
    assert not any(n.startswith("benches/") for n in names)
    assert {n.split("/")[0] for n in names if not n.startswith("coopsim-")} == {"coopsim"}
    info = {n.split("/")[1]: n for n in names if ".dist-info/" in n}
    scripts = zipfile.ZipFile(wheel).read(info["entry_points.txt"]).decode()
    assert "coopsim-bench = coopsim.bench.cli:console" in scripts


def test_configs_have_one_source():
    """The top-level configs/ only points to the package data: no copy to drift."""
    assert not list((ROOT / "configs").rglob("*.yaml"))
    readme = (ROOT / "configs" / "README.md").read_text()
    assert "coopsim/configs/topologies" in readme and "coopsim/configs/ccl.yaml" in readme


def test_python_m_coopsim_bench_runs_outside_the_checkout(tmp_path):
    result = subprocess.run([sys.executable, "-m", "coopsim.bench", "allreduce", "-b", "8",
                             "-e", "64"], cwd=tmp_path, env=_this_coopsim(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# coopsim all_reduce_perf (python -m coopsim.bench allreduce)")
    rows = [line.split() for line in lines if line and not line.startswith("#")]
    assert [int(r[0]) for r in rows] == [8, 16, 32, 64] and all(r[8] == "0" for r in rows)


def test_help_lists_every_bench(capsys):
    assert cli.run(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in BENCHES)
    assert sorted(c.name for c in BENCHES.values()) == sorted(COLLECTIVES)


def test_unknown_or_missing_bench_is_one_line_naming_the_choices(capsys):
    assert cli.run(["all_reduce", "-b", "8"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("python -m coopsim.bench: error: unknown bench 'all_reduce': expected "
                          "one of allreduce, all_gather, reduce_scatter, broadcast, reduce, "
                          "alltoall, sendrecv")
    assert "did you mean allreduce?" in err
    assert cli.run([], prog="coopsim-bench") == 2
    assert capsys.readouterr().err.startswith("coopsim-bench: error: missing the bench's name")


def test_a_bench_named_first_gets_the_rest_of_the_arguments(capsys):
    assert cli.run(["broadcast", "-b", "4K", "-e", "4K", "-r", "3", "-c", "0"], prog="coopsim-bench") == 0
    out = capsys.readouterr().out
    assert out.startswith("# coopsim broadcast_perf (coopsim-bench broadcast)")
    assert "; root: 3" in out


def test_bench_datatypes_match_the_context_dtypes():
    """The bench's own type table (its oracle for expected values) agrees with coopsim's."""
    import coopsim

    for name, datatype in DATATYPES.items():
        dtype = getattr(coopsim.RuntimeContext, datatype.torch)
        assert dtype.itemsize == datatype.itemsize, name
        assert dtype.is_floating_point == datatype.is_floating_point, name


def test_ci_readme_blocks_runs_each_block_and_names_the_failing_one(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n```python\nprint('first')\n```\n\n```bash\nfalse\n```\n\n"
                      "```python\nimport sys\nsys.exit('the second block fails')\n```\n\n"
                      "```python\nprint('never run')\n```\n")
    result = subprocess.run([sys.executable, str(ROOT / ".ci" / "readme_blocks.py"), str(readme)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"{readme}:3: ok" in result.stdout and "never run" not in result.stdout
    assert f"{readme}:11: the python block failed (exit status 1)" in result.stderr
    assert "the second block fails" in result.stderr


def test_ci_builds_the_wheel_and_runs_it_outside_the_checkout():
    """.ci/run goes on, after the README's commands, with the installed wheel."""
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "pip wheel --no-deps --quiet -w .ci-dist ." in ci
    assert "python -m pip install --quiet .ci-dist/coopsim-*.whl" in ci  # not -e
    assert ci.index('cd "$outside"') < ci.index("coopsim-bench allreduce -b 8 -e 1M")
    assert 'python "$root/.ci/readme_blocks.py" "$root/README.md"' in ci
