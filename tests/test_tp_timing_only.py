"""Timing-only tensors (``RuntimeContext(timing_only=True)``, ADR-0020): the same program
costs the same virtual time with and without data, computes nothing, takes no host memory,
and refuses host reads; device memory is still accounted."""

import resource

import numpy as np
import pytest

import coopsim
from coopsim.kernels.examples import vector_add
from coopsim.tp import layers as L
from coopsim.tp import parallel_state as ps


def _program(rank, ctx, out):
    """Tensor ops, views, collectives, p2p, a kernel and a TP MLP; records the virtual
    time after each part, the memory in use and the stream trace."""
    dist = ctx.distributed
    dist.init_process_group("nccl")
    times = []
    a = ctx.ones(64, 32) * (rank + 1)
    b = a.t().contiguous().reshape(-1)[8:40].view(4, 8)
    c = (b @ ctx.ones(8, 16)).sum(0) + a[:16, 0].mean()
    c.copy_(c.to(ctx.bfloat16))
    dist.all_reduce(a)
    out_g = ctx.empty(64 * dist.get_world_size(), 32)
    dist.all_gather_single(out_g, a)
    ctx.cuda.synchronize()
    times.append(ctx.sim.now_ns())
    peer = ctx.zeros(1000)
    if rank % 2 == 0:
        dist.send(peer, rank + 1)
    else:
        dist.recv(peer, rank - 1)
    vector_add(ctx, ctx.ones(3000), ctx.ones(3000))
    ctx.cuda.synchronize()
    times.append(ctx.sim.now_ns())
    ps.initialize_model_parallel(ctx, 2)
    for sp in (False, True):
        mlp = L.ParallelMLP(ctx, 32, 128, sequence_parallel=sp)
        y, _ = mlp.forward(ctx.ones(8 // (2 if sp else 1), 2, 32))
        mlp.backward(y)
        ctx.cuda.synchronize()
        times.append(ctx.sim.now_ns())
    out[rank] = (times, ctx.cuda.memory_allocated(), y)


def _run(timing_only, model):
    out = {}
    with coopsim.RuntimeContext(topology="dgx_h100", timing_only=timing_only, ccl={"model": model}) as ctx:
        with ctx.sim.trace() as recorder:
            ctx.multiprocessing.spawn(_program, args=(ctx, out), nprocs=4)
        # names aside (a layer's weight is made by ``tensor`` from its master weight with data,
        # by ``zeros`` without: the same op cost), every op and transfer
        events = [(e["ts"], e.get("dur"), e["pid"], e["tid"]) for e in recorder.events() if e["ph"] != "M"]
    return out, events


@pytest.mark.parametrize("model", ["transfer", "analytic"])
def test_the_same_program_takes_the_same_virtual_time_with_and_without_data(model):
    with_data, data_events = _run(False, model)
    hollow, hollow_events = _run(True, model)
    assert hollow_events == data_events  # same starts and durations
    for rank in range(4):
        assert hollow[rank][0] == with_data[rank][0]
        assert hollow[rank][1] == with_data[rank][1]  # device memory accounted the same
    assert with_data[0][2].numpy().any()  # the data run computed numbers ...
    with pytest.raises(RuntimeError, match="timing-only tensor"):  # ... the other had none
        hollow[0][2].numpy()


def test_host_reads_of_timing_only_tensors_raise_a_clear_error():
    with coopsim.RuntimeContext(timing_only=True) as ctx:
        t = ctx.ones(3, 4)
        for read in (t.numpy, t.tolist, lambda: t[0, 0].item(), lambda: float(t[0, 0]), lambda: list(t)):
            with pytest.raises(RuntimeError, match=r"timing-only tensor \(shape \[.*timing_only=False"):
                read()
        assert "timing_only=True" in repr(t) and "size=(3, 4)" in repr(t)


def test_timing_only_tensors_take_no_host_memory():
    with coopsim.RuntimeContext(topology="dgx_h100", timing_only=True) as ctx:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        a = ctx.ones(16384, 16384)  # 1 GiB each
        b = ctx.ones(16384, 16384)
        c = (a @ b).t().contiguous() + a
        ctx.cuda.synchronize()
        grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert ctx.cuda.memory_allocated() == 3 * 16384 * 16384 * 4  # a, b, c (the temporaries are freed)
        assert grown_mib < 100
        del c
        assert ctx.cuda.memory_allocated() == 2 * 16384 * 16384 * 4


def test_timing_only_is_a_bool():
    with pytest.raises(TypeError, match="timing_only must be a bool"):
        coopsim.RuntimeContext(timing_only="yes")


def test_a_data_run_still_has_its_values():
    with coopsim.RuntimeContext() as ctx:
        assert not ctx.timing_only
        assert np.array_equal((ctx.ones(2, 2) * 3).numpy(), np.full((2, 2), 3.0, np.float32))
