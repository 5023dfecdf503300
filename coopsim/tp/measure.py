"""Measure a ``ParallelMLP`` forward and backward per tensor-parallel size (the library under
``python -m benches.tp``).

Each run is one spawn of ``tp`` ranks on a fresh context of the topology (timing-only by
default: model-scale shapes cost no host memory). Times are read from the context's trace:
on every rank's streams, the slices of the forward (from the synchronized start to the end
of the forward) and of the backward; a slice is communication if it is a collective, else
compute. Collectives run on the NCCL stream, so an async one overlaps compute (the
sequence-parallel backward): ``compute + communication`` may exceed ``total`` (the phase's
wall, as virtual time, idle gaps included). Figures are rank 0's; memory is the largest
``memory_allocated`` of any rank, sampled at the end of the forward and of the backward.

``new_context(timing_only=...)`` makes each run's fresh ``RuntimeContext`` (e.g.
``functools.partial(RuntimeContext, topology="dgx_h100")``): the caller picks the machine,
and this layer never imports the context (layers import downward only).
"""

from __future__ import annotations

import numpy as np

from coopsim.tp import layers as L
from coopsim.tp import parallel_state as ps
from coopsim.tp.reference import mlp_reference


def _split(events, device: int, start_ns: float, end_ns: float) -> dict:
    """Compute and communication ns of ``device``'s streams' slices starting in [start, end)."""
    compute = comm = 0.0
    for e in events:
        if e.get("ph") != "X" or e["pid"] != device or e["cat"] != "stream":
            continue
        ts = e["ts"] * 1e3  # us -> ns, give or take a rounding: a slack of 1 ns either side
        if not start_ns - 1.0 <= ts < end_ns - 1.0:
            continue
        if "collective" in e["args"]:
            comm += e["dur"] * 1e3
        else:
            compute += e["dur"] * 1e3
    return {"compute_ns": compute, "communication_ns": comm, "total_ns": end_ns - start_ns}


def _worker(rank, ctx, tp, shape, dtype, sequence_parallel, marks):
    seq, batch, hidden, ffn = shape
    ctx.distributed.init_process_group("nccl")
    ps.initialize_model_parallel(ctx, tp)
    mlp = L.ParallelMLP(ctx, hidden, ffn, sequence_parallel=sequence_parallel, params_dtype=dtype)
    rows = seq // tp if sequence_parallel and tp > 1 else seq
    x = ctx.zeros(rows, batch, hidden, dtype=dtype)
    ctx.cuda.synchronize()
    ctx.distributed.barrier()
    ctx.cuda.synchronize()
    t0 = ctx.sim.now_ns()
    out, _bias = mlp.forward(x)
    ctx.cuda.synchronize()
    t1 = ctx.sim.now_ns()
    memory = ctx.cuda.memory_allocated()
    grad = ctx.zeros(*out.shape, dtype=dtype)
    ctx.cuda.synchronize()
    t2 = ctx.sim.now_ns()
    mlp.backward(grad)
    ctx.cuda.synchronize()
    t3 = ctx.sim.now_ns()
    marks[rank] = (ctx.cuda.current_device(), t0, t1, t2, t3, max(memory, ctx.cuda.memory_allocated()))


def measure_mlp(new_context, tp: int, *, hidden: int, ffn: int, seq: int, batch: int = 1,
                dtype: str = "bfloat16", sequence_parallel: bool = False,
                timing_only: bool = True) -> dict:
    """Forward and backward of a ParallelMLP on ``tp`` ranks of a ``new_context()``: per
    phase ``compute_ns``, ``communication_ns``, ``total_ns`` (rank 0), and ``memory_bytes``."""
    with new_context(timing_only=timing_only) as ctx:
        if tp > ctx.topology.num_devices:
            raise ValueError(f"measure_mlp: tp={tp} ranks, but topology {ctx.topology.name!r} has only "
                             f"{ctx.topology.num_devices} devices")
        marks = {}
        with ctx.sim.trace() as recorder:
            ctx.multiprocessing.spawn(_worker, args=(ctx, tp, (seq, batch, hidden, ffn),
                                                     getattr(ctx, dtype), sequence_parallel, marks),
                                      nprocs=tp)
        events = recorder.events()
    device, t0, t1, t2, t3, _ = marks[0]
    return {"tp": tp, "forward": _split(events, device, t0, t1),
            "backward": _split(events, device, t2, t3),
            "memory_bytes": max(m[5] for m in marks.values())}


def collectives_time_ns(new_context, calls, *, timing_only: bool = True) -> float:
    """Rank 0's stream time of ``calls`` (``(kind, shape, dtype)``: ``all_reduce`` of a tensor
    of ``shape``, ``all_gather`` of ``shape`` per rank, ``reduce_scatter`` into ``shape`` per
    rank), issued one after the other by as many ranks as the topology has devices."""
    def worker(rank, ctx, out):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        world = dist.get_world_size()
        tensors = []
        for kind, shape, dtype in calls:  # allocated first: only the collectives are timed
            t = ctx.zeros(*shape, dtype=getattr(ctx, dtype))
            other = None
            if kind != "all_reduce":
                other = ctx.zeros(shape[0] * world, *shape[1:], dtype=getattr(ctx, dtype))
            tensors.append((kind, t, other))
        ctx.cuda.synchronize()
        dist.barrier()
        ctx.cuda.synchronize()
        t0 = ctx.sim.now_ns()
        for kind, t, other in tensors:
            if kind == "all_reduce":
                dist.all_reduce(t)
            elif kind == "all_gather":
                dist.all_gather_single(other, t)
            elif kind == "reduce_scatter":
                dist.reduce_scatter_single(t, other)
            else:
                raise ValueError(f"collectives_time_ns: unknown kind {kind!r}")
        ctx.cuda.synchronize()
        out[rank] = (ctx.cuda.current_device(), t0, ctx.sim.now_ns())

    with new_context(timing_only=timing_only) as ctx:
        out = {}
        with ctx.sim.trace() as recorder:
            ctx.multiprocessing.spawn(worker, args=(ctx, out), nprocs=ctx.topology.num_devices)
        device, t0, t1 = out[0]
        return _split(recorder.events(), device, t0, t1)["communication_ns"]


def check_mlp(new_context, tp: int, *, sequence_parallel: bool = False, seed: int = 0,
              hidden: int = 16, ffn: int = 64, seq: int = 8, batch: int = 2) -> float:
    """The largest absolute difference between a ParallelMLP on ``tp`` ranks (with data,
    float32) and the unsplit numpy layer, over the output and the input gradient."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(seq, batch, hidden)).astype(np.float32)
    g = rng.normal(size=(seq, batch, hidden)).astype(np.float32)
    results = {}

    def worker(rank, ctx):
        ctx.distributed.init_process_group("nccl")
        ps.initialize_model_parallel(ctx, tp)
        mlp = L.ParallelMLP(ctx, hidden, ffn, sequence_parallel=sequence_parallel, seed=seed,
                            keep_master_weight_for_test=True)
        n = seq // tp if sequence_parallel else seq
        lo = ps.get_tensor_model_parallel_rank(ctx) * n if sequence_parallel else 0
        out, bias = mlp.forward(ctx.tensor(x[lo:lo + n]))
        grad_in = mlp.backward(ctx.tensor(g[lo:lo + n]))
        results[rank] = (out.numpy(), grad_in.numpy(), mlp.dense_h_to_4h.master_weight,
                         mlp.dense_4h_to_h.master_weight)

    with new_context(timing_only=False) as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=tp)
    w1, w2 = results[0][2], results[0][3]
    ref = mlp_reference(x, w1, np.zeros(ffn, np.float32), w2, g)
    join = np.concatenate if sequence_parallel else (lambda parts: parts[0])
    out = join([results[r][0] for r in range(tp)])
    grad_in = join([results[r][1] for r in range(tp)])
    return float(max(np.abs(out - ref["out"]).max(), np.abs(grad_in - ref["grad_input"]).max()))
