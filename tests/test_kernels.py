"""Kernels: the tile language's numbers, its cost, and program greenlets parented by main (C4)."""

import numpy as np
import pytest
from greenlet import getcurrent

import coopsim
from coopsim.kernels import gemm, vector_add
from tests.conftest import live_coopsim_greenlets


@pytest.mark.parametrize("dtype", ["float32", "float16", "int32", "int64"])
@pytest.mark.parametrize("n", [1, 1000, 4096])
def test_vector_add_matches_numpy(ctx, dtype, n):
    rng = np.random.default_rng(n)
    a = (rng.standard_normal(n) * 100).astype(dtype)
    b = (rng.standard_normal(n) * 100).astype(dtype)
    out = vector_add(ctx, ctx.from_numpy(a), ctx.from_numpy(b), block=256)
    np.testing.assert_array_equal(out.numpy(), a + b)


@pytest.mark.parametrize("m, k, n", [(64, 64, 64), (70, 33, 45), (1, 5, 1)])
def test_gemm_matches_numpy(ctx, m, k, n):
    rng = np.random.default_rng(m * k * n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = gemm(ctx, ctx.from_numpy(a), ctx.from_numpy(b), block_m=32, block_n=16, block_k=8)
    np.testing.assert_allclose(c.numpy(), a @ b, rtol=1e-5, atol=1e-5)


def test_gemm_float16_accumulates_in_float32(ctx):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((32, 256)).astype(np.float16)
    b = rng.standard_normal((256, 16)).astype(np.float16)
    c = gemm(ctx, ctx.from_numpy(a), ctx.from_numpy(b), block_m=16, block_n=16, block_k=32)
    reference = (a.astype(np.float32) @ b.astype(np.float32)).astype(np.float16)
    np.testing.assert_allclose(c.numpy().astype(np.float32), reference.astype(np.float32), rtol=2e-3, atol=2e-2)


def test_c4_kernel_programs_launched_from_a_rank_have_main_as_parent():
    parents = []

    def spy_kernel(tl, x):
        parents.append(getcurrent().parent)  # at the kernel's first step
        tl.store(x, tl.program_id(0) + tl.arange(0, 1), tl.load(x, tl.program_id(0) + tl.arange(0, 1)) + 1)

    def worker(rank, ctx):
        x = ctx.zeros(4, dtype=ctx.int32)
        ctx.launch(spy_kernel, 4, x)
        assert x.tolist() == [1, 1, 1, 1]

    main = getcurrent()
    with coopsim.RuntimeContext() as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2)
    assert len(parents) == 8 and all(p is main for p in parents)
    assert live_coopsim_greenlets() == []


def test_programs_and_ranks_interleave_in_virtual_time():
    log = []

    def slow_kernel(tl, x):
        for _ in range(3):
            tl.store(x, tl.arange(0, 1), tl.load(x, tl.arange(0, 1)) + 1)
            log.append(("program", tl.program_id(0)))

    def worker(rank, ctx):
        if rank == 0:
            x = ctx.zeros(1, dtype=ctx.int32)
            ctx.launch(slow_kernel, 1, x)
            assert x.item() == 3
        else:
            for _ in range(3):
                ctx.wait(ctx.sim.timer(5000))
                log.append(("rank", 1))

    with coopsim.RuntimeContext() as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2)
    kinds = [k for k, _ in log]
    assert kinds.count("program") == 3 and kinds.count("rank") == 3
    assert kinds != sorted(kinds)  # neither side ran to completion first


def test_kernel_cost_is_the_roofline_of_the_whole_grid(ctx):
    n, block = 1 << 16, 1024
    x = ctx.ones(n)
    y = ctx.ones(n)
    ctx.cuda.synchronize()
    start = ctx.sim.now_ns()
    out = vector_add(ctx, x, y, block=block)
    ctx.cuda.synchronize()
    elapsed = ctx.sim.now_ns() - start
    device = ctx.sim.runtime.devices[0]
    expected = device.kind.launch_overhead_ns + device.memory_ns(3 * n * 4)
    assert elapsed == pytest.approx(expected, rel=1e-9)
    assert out.sum().item() == 2 * n


def test_a_failing_program_is_its_ranks_root_cause():
    def bad_kernel(tl, x):
        tl.load(x, tl.arange(0, 8))  # x has 4 elements: out of bounds

    def worker(rank, ctx):
        x = ctx.zeros(4)
        if rank == 1:
            ctx.launch(bad_kernel, 1, x)
        x[0].item() if rank == 1 else None
        ctx.wait(ctx.sim.timer(10))

    with coopsim.RuntimeContext() as ctx:
        with pytest.raises(coopsim.SpawnException) as info:
            ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2)
    assert list(info.value.errors) == [1]
    assert isinstance(info.value.errors[1], IndexError)
    assert "kernel bad_kernel[0, 0, 0] of rank 1 raised" in info.value.msg


def test_a_blocked_program_shows_in_the_deadlock_report():
    def waiting_kernel(tl, ctx, event):
        ctx.wait(event)  # NEVER-SET

    def worker(rank, ctx):
        x = ctx.zeros(1)
        ctx.launch(waiting_kernel, 1, ctx, ctx.sim.event("never"))
        ctx.launch(lambda tl, x: None, 1, x)
        x.item()

    with coopsim.RuntimeContext() as ctx:
        with pytest.raises(coopsim.DeadlockError) as info:
            ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=1)
    tasks = [row["task"] for row in info.value.report["ranks"]]
    assert tasks == ["rank 0", "kernel waiting_kernel[0, 0, 0] of rank 0"]
    assert live_coopsim_greenlets() == []


@pytest.mark.parametrize("grid", [0, (1, 2, 3, 4), "x", (2.0,)])
def test_launch_rejects_a_bad_grid(ctx, grid):
    with pytest.raises(ValueError, match="grid must be"):
        ctx.launch(lambda tl: None, grid)
