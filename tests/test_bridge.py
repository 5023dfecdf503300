"""The PyTorch bridge without PyTorch: launch on coopsim, to_host, compare, the lazy import
and the error that names the extra. (Real processes: tests/test_bridge_torch.py.)"""

import os
import select
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

import coopsim
from coopsim.bridge import CrosscheckError, HostTensor, compare, launch, to_host
from coopsim.bridge.examples import data_parallel_step, p2p_ring, ring_all_reduce

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter whose cwd is this worktree (its coopsim comes first)."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, start_new_session=True)


def report(rank, torch, tag):
    dist = torch.distributed
    t = torch.full((2,), rank + 1, dtype=torch.bfloat16)
    dist.all_reduce(t)
    return {"tag": tag, "rank": dist.get_rank(), "backend": dist.get_backend(),
            "world": dist.get_world_size(), "t": t, "sim": torch.sim.seed}


def test_launch_sim_runs_fn_per_rank_in_an_initialized_group_and_returns_host_values():
    results = launch(report, args=("x",), nprocs=3, backend="sim", dist_backend="gloo", seed=7)
    assert [r["rank"] for r in results] == [0, 1, 2]
    assert {(r["tag"], r["backend"], r["world"], r["sim"]) for r in results} == {("x", "gloo", 3, 7)}
    for r in results:
        assert r["t"].dtype == "torch.bfloat16"
        np.testing.assert_array_equal(r["t"].values, np.array([6, 6], np.float32))


def test_launch_is_exported_lazily_by_the_package():
    assert coopsim.launch is launch
    assert coopsim.crosscheck is coopsim.bridge.crosscheck
    with pytest.raises(AttributeError, match="no attribute 'lunch'"):
        coopsim.lunch


def test_launch_sim_failure_is_coopsims_spawn_exception():
    def fails(rank, torch):
        if rank == 1:
            raise ValueError("rank one fails")

    with pytest.raises(coopsim.SpawnException, match="rank one fails") as info:
        launch(fails, nprocs=2)
    assert info.value.error_index == 1


@pytest.mark.parametrize("kwargs, error, match", [
    ({"backend": "gloo"}, ValueError, "backend must be one of"),
    ({"nprocs": 0}, ValueError, "nprocs must be an int >= 1"),
    ({"args": [1]}, TypeError, "args must be a tuple"),
    ({"join": False}, TypeError, r"unexpected keyword\(s\) \['join'\]"),
    ({"timeout_s": 0}, ValueError, "timeout_s must be None or seconds > 0"),
])
def test_launch_validates_its_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        launch(report, **{"args": ("x",), **kwargs})


def test_launch_torch_rejects_a_worker_that_processes_cannot_receive():
    with pytest.raises(TypeError, match="fn must be picklable.*module-level function"):
        launch(lambda rank, torch: rank, nprocs=1, backend="torch")


def test_portable_p2p_programs_compute_the_expected_values_on_coopsim():
    ring = launch(p2p_ring, nprocs=3)
    assert [r.values.tolist() for r in ring] == [[5, 5, 5], [1, 1, 1], [3, 3, 3]]
    assert {tuple(r.values) for r in launch(ring_all_reduce, nprocs=3)} == {(6.0,) * 4}


def test_portable_data_parallel_step_keeps_replicas_in_sync_on_coopsim():
    results = launch(data_parallel_step, nprocs=2)
    np.testing.assert_array_equal(results[0]["w"].values, results[1]["w"].values)
    assert results[0]["loss"].values != results[1]["loss"].values  # different data per rank


Point = namedtuple("Point", "x y")


def test_to_host_converts_coopsim_tensors_inside_containers(ctx):
    value = to_host({"a": [ctx.arange(3), (ctx.ones(2, dtype=ctx.bfloat16) / 3, 5)], "b": "s"})
    first, (third, five) = value["a"]
    assert first.dtype == "torch.int64" and first.values.tolist() == [0, 1, 2]
    assert third.dtype == "torch.bfloat16" and third.values.dtype == np.float32
    assert third.values[0] == np.float32(0.333984375)  # 1/3 rounded to bfloat16
    assert (five, value["b"]) == (5, "s")
    point = to_host(Point(ctx.arange(2), 3))  # a namedtuple: converted field by field
    assert type(point) is Point and point.x.values.tolist() == [0, 1] and point.y == 3


def host(dtype, values):
    return HostTensor(dtype, np.asarray(values))


def test_compare_applies_torch_testing_tolerances_per_dtype():
    assert compare([host("torch.float16", [1.0])], [host("torch.float16", [1.0005])]) == []
    assert compare([host("torch.float32", [1.0])], [host("torch.float32", [1.0005])]) != []
    assert compare([host("torch.int64", [1])], [host("torch.int64", [2])]) != []
    assert compare([host("torch.float32", [1.0])], [host("torch.float32", [1.0005])], rtol=1e-3) == []


def test_compare_reports_every_difference_with_its_rank_and_place():
    sim = [{"t": host("torch.float32", [1.0, 2.0]), "n": 3}, [host("torch.int64", [1]), "x"]]
    real = [{"t": host("torch.float32", [1.0, 2.5]), "n": 4}, [host("torch.int32", [1]), "x", 1]]
    found = [str(d) for d in compare(sim, real)]
    assert found == [
        "rank 0, value['t']: 1 of 2 torch.float32 values differ beyond rtol=1.3e-06, atol=1e-05; "
        f"first at index [1]: coopsim {np.float64(2.0)!r}, PyTorch {np.float64(2.5)!r}",
        "rank 0, value['n']: coopsim 3 != PyTorch 4",
        "rank 1, value: length differs: coopsim 2, PyTorch 3",
    ]
    found = [str(d) for d in compare([[host("torch.int64", [1]), (1,)]], [[host("torch.int32", [1]), [1]]])]
    assert found == ["rank 0, value[0]: dtype differs: coopsim torch.int64, PyTorch torch.int32",
                     "rank 0, value[1]: coopsim returned a tuple, PyTorch a list"]
    error = CrosscheckError(compare(sim, real), sim, real)
    assert "differ in 3 place(s)" in str(error) and "rank 1, value: length differs" in str(error)


def test_import_coopsim_imports_neither_torch_nor_the_bridge():
    result = run_python("import sys, coopsim; coopsim.RuntimeContext().close();"
                        "print(sorted(m for m in ('torch', 'coopsim.bridge') if m in sys.modules))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


BLOCK_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == 'torch' or name.startswith('torch.'):
            raise ModuleNotFoundError("No module named 'torch'", name='torch')
sys.meta_path.insert(0, NoTorch())
import coopsim
def worker(rank, torch):
    return rank
print(coopsim.launch(worker, nprocs=2, backend='sim'))
try:
    coopsim.launch(worker, nprocs=2, backend='torch')
except ImportError as e:
    print('ImportError:', e)
"""


def test_backend_torch_without_torch_raises_an_error_naming_the_extra():
    result = run_python(BLOCK_TORCH)
    assert result.returncode == 0, result.stderr
    sim_line, error_line = result.stdout.strip().splitlines()
    assert sim_line == "[0, 1]"
    assert error_line.startswith("ImportError: backend='torch' needs PyTorch")
    assert "pip install 'coopsim[torch]'" in error_line


ORPHAN = """
import os, signal, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", (
    "import signal, sys, time\\n"
    "from coopsim.bridge.processes import _die_with_parent\\n"
    "_die_with_parent()\\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)  # deaf to torch's SIGINT, like a rank in C++\\n"
    "print('ready', flush=True)\\n"
    "time.sleep(600)\\n")], stdout=subprocess.PIPE)
if child.stdout.readline() != b"ready\\n":
    sys.exit("the child did not start")  # prints no pid: the test fails
print(child.pid, flush=True)
signal.pause()
"""


def test_a_rank_process_dies_with_its_parent_even_if_it_ignores_sigint():
    """rank_main's PR_SET_PDEATHSIG: a launcher killed with SIGKILL leaves no rank behind."""
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        child = int(parent.stdout.readline())
        watch = os.pidfd_open(child)
        parent.kill()
        assert select.select([watch], [], [], 20)[0] == [watch], "the child outlived its parent"
    finally:
        parent.kill()
        parent.wait()


def test_crosscheck_runs_both_backends_with_one_dist_backend_and_raises_on_a_difference(monkeypatch):
    """The real-process side is replaced by coopsim with another seed, so that the two runs
    differ exactly where the worker reports its seed (the real run is in test_bridge_torch)."""
    from coopsim.bridge import checker as module

    calls = []

    def fake_launch(fn, args, nprocs, backend, topology=None, **kwargs):
        calls.append((backend, kwargs["dist_backend"]))
        return launch(fn, args, nprocs, "sim", topology, dist_backend=kwargs["dist_backend"],
                      seed=kwargs["seed"] + (backend == "torch"))

    monkeypatch.setattr(module, "launch", fake_launch)
    with pytest.raises(CrosscheckError) as info:
        module.crosscheck(report, ("x",), 2, dist_backend="gloo", seed=1)
    assert calls == [("sim", "gloo"), ("torch", "gloo")]
    assert [str(d) for d in info.value.differences] == [
        "rank 0, value['sim']: coopsim 1 != PyTorch 2", "rank 1, value['sim']: coopsim 1 != PyTorch 2"]


def test_compare_takes_dtypes_by_name_and_a_torch_size_as_a_tuple(ctx):
    class Size(tuple):  # stands for torch.Size (torch is not needed here)
        pass

    class dtype:  # stands for torch.dtype, whose repr is the name
        def __repr__(self):
            return "torch.int64"

    Size.__module__ = dtype.__module__ = "torch"
    assert compare([[ctx.int64, (2, 3)]], [[dtype(), Size((2, 3))]]) == []
    found = [str(d) for d in compare([[ctx.int32, (2, 3)]], [[dtype(), Size((2, 4))]])]
    assert found == ["rank 0, value[0]: coopsim 'torch.int32' != PyTorch 'torch.int64'",
                     "rank 0, value[1][1]: coopsim 3 != PyTorch 4"]
