"""The bridge on real PyTorch: torch_like, crosscheck, failures, torchrun, and real processes
that never hang CI (own process groups, a deadline, a report, nothing left alive).

Each real launch costs a few seconds of CPU (every process imports torch): keep them few.
"""

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from coopsim.bridge import LaunchTimeout, crosscheck, launch, to_host  # noqa: E402
from coopsim.bridge.examples import portable_programs  # noqa: E402
from coopsim.bridge.torch_like import TorchLike, TorchSim  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def torch_like():
    return TorchLike(torch, TorchSim(torch, seed=3))


def test_torch_like_forwards_to_torch_and_adds_only_sim(torch_like):
    assert torch_like.distributed is torch.distributed and torch_like.cuda is torch.cuda
    assert torch_like.distributed.is_available() and torch_like.float32 is torch.float32
    assert torch_like.wait is torch.wait
    assert torch_like.sim.seed == 3 and "sim" in dir(torch_like)
    assert not hasattr(torch, "sim")  # the global module is untouched


def test_torch_sim_timer_takes_its_wall_time_and_is_complete(torch_like):
    sim = torch_like.sim
    start = sim.now_ns()
    timer = sim.timer(20_000_000)
    assert timer.done() and sim.now_ns() - start >= 20_000_000
    assert torch_like.wait(timer) is None  # at once: torch.wait would hold the GIL while waiting


def test_torch_sim_event_completes_when_set(torch_like):
    event = torch_like.sim.event("go")
    assert not event.done()
    event.set()
    assert event.done() and torch_like.wait(event) is None


def test_torch_sim_trace_writes_a_chrome_trace(torch_like, tmp_path):
    with torch_like.sim.trace(tmp_path / "run.json"):
        torch_like.ones(8).sum()
    events = json.loads((tmp_path / "run.json").read_text())["traceEvents"]
    assert any("sum" in e.get("name", "") for e in events)


def test_torch_sim_names_without_a_real_meaning_say_so(torch_like):
    with pytest.raises(AttributeError, match=r"torch.sim.faults is coopsim-only"):
        torch_like.sim.faults


def test_to_host_converts_torch_tensors_like_coopsim_tensors():
    t = torch.ones(2, dtype=torch.bfloat16, requires_grad=True) / 3
    value = to_host([t, torch.arange(3)])
    assert value[0].dtype == "torch.bfloat16" and value[0].values.dtype == np.float32
    assert value[0].values[0] == np.float32(0.333984375)
    assert value[1].dtype == "torch.int64" and value[1].values.tolist() == [0, 1, 2]


def test_crosscheck_collectives_p2p_rings_data_and_tensor_parallel_agree():
    results = crosscheck(portable_programs, nprocs=2, timeout_s=30)
    assert results[0]["p2p_ring"].values.tolist() == [3, 3, 3]
    assert results[1]["collectives"]["broadcast"].values.tolist() == [20, 20]
    assert results[0]["ring_all_reduce"].values.tolist() == [3.0] * 4  # the tutorial's isend+recv ring
    assert results[0]["tensor_parallel_mlp"].values.shape == (3, 8)


def fails_on_rank_0(rank, torch):
    raise ValueError(f"rank {rank} of {torch.distributed.get_world_size()} fails")


def test_a_failing_rank_is_torchs_process_raised_exception():
    with pytest.raises(torch.multiprocessing.ProcessRaisedException,
                       match=r"ValueError: rank 0 of 1 fails") as info:
        launch(fails_on_rank_0, nprocs=1, backend="torch", timeout_s=30)
    assert info.value.error_index == 0


def hangs(rank, torch):
    if rank == 0:
        torch.distributed.barrier()  # waits for rank 1, which never comes
    torch.wait(torch.sim.event("never set"))  # HANG HERE


def test_a_hanging_worker_is_killed_and_reported_within_its_deadline():
    deadline_s = 2  # counted from when both ranks are in ``hangs`` (start-up is not counted)
    with pytest.raises(LaunchTimeout) as info:
        launch(hangs, nprocs=2, backend="torch", timeout_s=deadline_s)
    error = info.value
    assert deadline_s <= error.waited_s < deadline_s + 5  # + the stack dumps (<= 2 s) and kills
    assert error.ranks == [0, 1] and "still running after timeout_s=2 wall seconds in fn" in str(error)
    assert "in hangs" in error.stacks[1] and "barrier" in error.stacks[0]
    for pgid in error.pids:  # every rank's process group is gone, not just the rank
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)


def test_torchrun_runs_the_portable_example_on_real_processes():
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    command += ["--standalone", "--nproc-per-node", "2", "-m", "coopsim.bridge.torchrun",
                "examples/portable.py"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=50)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, err
    lines = sorted(re.findall(r"rank \d+ of \d+: all_reduce -> \[[^\]]*\]", out))
    assert lines == [f"rank {r} of 2: all_reduce -> [3.0, 3.0, 3.0, 3.0]" for r in (0, 1)]


CTRL_C_SCRIPT = """
import os, sys
import coopsim

def worker(rank, torch):
    os.write(1, f"pid {os.getpid()}\\n".encode())  # one write: atomic, never interleaved
    torch.wait(torch.sim.event("never set"))  # hangs, holding the GIL

if __name__ == "__main__":
    coopsim.launch(worker, nprocs=1, backend="torch")  # one rank: each costs a torch import
"""


def read_lines(process, count: int, within_s: float) -> list[str]:
    """The first ``count`` lines of ``process``'s stdout, waiting at most ``within_s``."""
    data, deadline = b"", time.monotonic() + within_s
    while data.count(b"\n") < count:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(process.stdout.fileno(), 4096) if ready else b""
        if not chunk:
            raise AssertionError(f"got {data!r} within {within_s} s, expected {count} lines; "
                                 f"stderr: {process.stderr.read() if process.poll() is not None else ''}")
        data += chunk
    return data.decode().splitlines()


def test_ctrl_c_reaches_and_ends_the_real_ranks(tmp_path):
    """SIGINT to the launching program's process group (what Ctrl-C does) ends the ranks too,
    although they live in process groups of their own."""
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        pids = [int(line.split()[1]) for line in read_lines(process, 1, within_s=45)]
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:  # the test failed early: still let launch clean up
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()  # its ranks die with it (PR_SET_PDEATHSIG)
                process.wait()
    assert b"KeyboardInterrupt" in err
    for pgid in pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)


def test_tensors_print_as_torch_prints_them():
    # torch/_tensor_str.py's default print options; host tensors on both sides (no device suffix)
    import coopsim

    cases = [
        ("tensor", [1.5, 2.0], None), ("tensor", [1, 2], None), ("tensor", [1.0, -2.0, 30.0], None),
        ("tensor", [1e-5, 1.0], None), ("tensor", [1e9, 1.0], None), ("tensor", [float("nan"), 1.0, float("inf")], None),
        ("tensor", 3.25, None), ("tensor", 7, None), ("tensor", [True, False], None), ("tensor", [1, -20], "int32"),
        ("tensor", [0.1, 0.2], "float16"), ("tensor", [0.1, 3.0], "bfloat16"), ("tensor", [0.1], "float64"),
        ("tensor", [-0.0, 1.5], None), ("tensor", [123456789012, -1], None), ("tensor", [1e-8, 12345.678, -3.0], None),
        ("arange", 2000, None), ("arange", 30, "float32"), ("zeros", (0,), None), ("zeros", (0, 3), None),
        ("zeros", (0,), "int64"),
    ]
    with coopsim.RuntimeContext() as ctx:
        for make, arg, dtype in cases:
            kw = {} if dtype is None else {"dtype": getattr(torch, dtype)}
            ours = getattr(ctx, make)(*((arg,) if make != "zeros" else arg),
                                      **({} if dtype is None else {"dtype": getattr(ctx, dtype)}))
            theirs = getattr(torch, make)(*((arg,) if make != "zeros" else arg), **kw)
            assert repr(ours.cpu()) == repr(theirs), (make, arg, dtype)
            shaped = [(3, 4), (2, 3, 4), (40, 50), (3, 1)]
            if make == "arange" and arg == 2000:
                for shape in shaped:
                    n = int(np.prod(shape))
                    a = (ctx.arange(n, dtype=ctx.float32) / 7).reshape(*shape).cpu()
                    b = (torch.arange(n, dtype=torch.float32) / 7).reshape(*shape)
                    assert str(a) == str(b), shape
