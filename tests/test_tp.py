"""Tensor parallelism: Megatron's group layout, the layers' numbers against the unsplit
numpy layer for every TP size, the collectives each layer issues, and the reports."""

from collections import Counter

import numpy as np
import pytest

import coopsim
from coopsim.tp import layers as L
from coopsim.tp import mappings as m
from coopsim.tp import parallel_state as ps
from coopsim.tp.reference import linear_reference, mlp_reference

S, B, H, FFN = 8, 2, 16, 32
TP_SIZES = (1, 2, 4, 8)


def spawn(nprocs, body, topology="dgx_h100"):
    """Run ``body(ctx)`` on ``nprocs`` ranks (process group and model parallel state set up
    by the body); return ``{rank: result}``."""
    out = {}

    def worker(rank, ctx):
        ctx.distributed.init_process_group("nccl")
        out[rank] = body(ctx)

    with coopsim.RuntimeContext(topology=topology) as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=nprocs)
    return out


# -- parallel_state ------------------------------------------------------------------------

def test_layout_tp2_pp2_dp2_matches_megatron():
    def body(ctx):
        ps.initialize_model_parallel(ctx, tensor_model_parallel_size=2, pipeline_model_parallel_size=2)
        return {kind: (list(group.ranks), group.name) for kind, group in (
            ("tp", ps.get_tensor_model_parallel_group(ctx)), ("dp", ps.get_data_parallel_group(ctx)),
            ("pp", ps.get_pipeline_model_parallel_group(ctx)), ("mp", ps.get_model_parallel_group(ctx)))} | {
            "ranks": (ps.get_tensor_model_parallel_rank(ctx), ps.get_data_parallel_rank(ctx),
                      ps.get_pipeline_model_parallel_rank(ctx)),
            "sizes": (ps.get_tensor_model_parallel_world_size(ctx), ps.get_data_parallel_world_size(ctx),
                      ps.get_pipeline_model_parallel_world_size(ctx)),
            "stages": (ps.is_pipeline_first_stage(ctx), ps.is_pipeline_last_stage(ctx))}

    got = spawn(8, body)
    # Megatron's docstring layout: TP [g0 g1] [g2 g3] ..., DP [g0 g2] [g1 g3] [g4 g6] [g5 g7],
    # PP [g0 g4] [g1 g5] [g2 g6] [g3 g7]
    tp = [[0, 1], [2, 3], [4, 5], [6, 7]]
    dp = [[0, 2], [1, 3], [4, 6], [5, 7]]
    pp = [[0, 4], [1, 5], [2, 6], [3, 7]]
    mp = [[0, 1, 4, 5], [2, 3, 6, 7]]
    for rank, r in got.items():
        for kind, groups in (("tp", tp), ("dp", dp), ("pp", pp), ("mp", mp)):
            index = next(i for i, g in enumerate(groups) if rank in g)
            assert r[kind] == (groups[index], f"{kind}[{index}]"), (rank, kind)
        assert r["ranks"] == (rank % 2, (rank // 2) % 2, rank // 4)
        assert r["sizes"] == (2, 2, 2)
        assert r["stages"] == (rank < 4, rank >= 4)


def test_rank_groups_follow_the_order_argument():
    sizes = {"tp": 2, "cp": 2, "ep": 1, "dp": 2, "pp": 1}
    assert ps.rank_groups("tp-cp-ep-dp-pp", sizes, "cp") == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert ps.rank_groups("tp-cp-ep-dp-pp", sizes, "dp-cp") == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert ps.rank_groups("tp-cp-ep-pp-dp", {**sizes, "pp": 2, "dp": 1}, "pp") == [[0, 4], [1, 5], [2, 6], [3, 7]]


def test_state_is_per_spawn_and_per_rank():
    def first(ctx):
        before = ps.model_parallel_is_initialized(ctx)
        ps.initialize_model_parallel(ctx, 2)
        return before, ps.model_parallel_is_initialized(ctx)

    def second(ctx):
        before = ps.model_parallel_is_initialized(ctx)
        ps.initialize_model_parallel(ctx, 4)
        size = ps.get_tensor_model_parallel_world_size(ctx)
        ps.destroy_model_parallel(ctx)
        return before, size, ps.model_parallel_is_initialized(ctx)

    with coopsim.RuntimeContext(topology="dgx_h100") as ctx:
        out = {}

        def worker(rank, ctx, body):
            ctx.distributed.init_process_group("nccl")
            out[rank] = body(ctx)

        ctx.multiprocessing.spawn(worker, args=(ctx, first), nprocs=4)
        assert set(out.values()) == {(False, True)}
        ctx.multiprocessing.spawn(worker, args=(ctx, second), nprocs=4)
        assert set(out.values()) == {(False, 4, False)}


def test_uninitialized_and_indivisible_layouts_raise():
    def body(ctx):
        with pytest.raises(RuntimeError, match="not initialized"):
            ps.get_tensor_model_parallel_rank(ctx)
        with pytest.raises(RuntimeError, match=r"world_size \(4\) is not divisible"):
            ps.initialize_model_parallel(ctx, 3)
        return True

    assert spawn(4, body) == {r: True for r in range(4)}


# -- numbers against the unsplit layer -----------------------------------------------------

def _data(seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(S, B, H)).astype(np.float32),
            "h4": rng.normal(size=(S, B, FFN)).astype(np.float32),
            "g_ffn": rng.normal(size=(S, B, FFN)).astype(np.float32),
            "g_h": rng.normal(size=(S, B, H)).astype(np.float32),
            "b_ffn": rng.normal(size=FFN).astype(np.float32),
            "b_h": rng.normal(size=H).astype(np.float32)}


def _chunk(a, rank, tp, dim):
    n = a.shape[dim] // tp
    return np.take(a, range(rank * n, (rank + 1) * n), axis=dim)


def close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tp", TP_SIZES)
@pytest.mark.parametrize("mode", ["plain", "gather_output", "sequence_parallel"])
def test_column_parallel_linear_equals_unsplit_layer(tp, mode):
    d = _data()
    sp = mode == "sequence_parallel"

    def body(ctx):
        ps.initialize_model_parallel(ctx, tp)
        rank = ps.get_tensor_model_parallel_rank(ctx)
        layer = L.ColumnParallelLinear(ctx, H, FFN, gather_output=mode == "gather_output",
                                       sequence_parallel=sp, seed=3, keep_master_weight_for_test=True)
        layer.bias[...] = ctx.tensor(_chunk(d["b_ffn"], rank, tp, 0))
        x = _chunk(d["x"], rank, tp, 0) if sp else d["x"]
        g = d["g_ffn"] if mode == "gather_output" else _chunk(d["g_ffn"], rank, tp, 2)
        out, bias = layer.forward(ctx.tensor(x))
        grad_in = layer.backward(ctx.tensor(g))
        return (out.numpy(), grad_in.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy(),
                layer.master_weight, bias)

    got = spawn(tp, body)
    ref = linear_reference(d["x"], got[0][4], d["b_ffn"], d["g_ffn"])
    for rank, (out, grad_in, gw, gb, _, bias) in got.items():
        assert bias is None
        close(out, ref["out"] if mode == "gather_output" else _chunk(ref["out"], rank, tp, 2))
        close(grad_in, _chunk(ref["grad_input"], rank, tp, 0) if sp else ref["grad_input"])
        close(gw, _chunk(ref["grad_weight"], rank, tp, 0))
        close(gb, _chunk(ref["grad_bias"], rank, tp, 0))


@pytest.mark.parametrize("tp", TP_SIZES)
@pytest.mark.parametrize("mode", ["input_is_parallel", "scatter_input", "sequence_parallel"])
def test_row_parallel_linear_equals_unsplit_layer(tp, mode):
    d = _data()
    sp = mode == "sequence_parallel"

    def body(ctx):
        ps.initialize_model_parallel(ctx, tp)
        rank = ps.get_tensor_model_parallel_rank(ctx)
        layer = L.RowParallelLinear(ctx, FFN, H, input_is_parallel=mode != "scatter_input",
                                    sequence_parallel=sp, seed=4, keep_master_weight_for_test=True)
        layer.bias[...] = ctx.tensor(d["b_h"])
        x = d["h4"] if mode == "scatter_input" else _chunk(d["h4"], rank, tp, 2)
        g = _chunk(d["g_h"], rank, tp, 0) if sp else d["g_h"]
        out, _ = layer.forward(ctx.tensor(x))
        grad_in = layer.backward(ctx.tensor(g))
        return (out.numpy(), grad_in.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy(),
                layer.master_weight)

    got = spawn(tp, body)
    ref = linear_reference(d["h4"], got[0][4], d["b_h"], d["g_h"])
    for rank, (out, grad_in, gw, gb, _) in got.items():
        close(out, _chunk(ref["out"], rank, tp, 0) if sp else ref["out"])
        close(grad_in, ref["grad_input"] if mode == "scatter_input" else _chunk(ref["grad_input"], rank, tp, 2))
        close(gw, _chunk(ref["grad_weight"], rank, tp, 1))
        if not sp:
            close(gb, ref["grad_bias"])
    if sp:  # each rank holds its sequence chunk's part; Megatron sums them when finalizing
        close(sum(r[3] for r in got.values()), ref["grad_bias"])


@pytest.mark.parametrize("tp", TP_SIZES)
@pytest.mark.parametrize("sp", [False, True])
def test_parallel_mlp_equals_unsplit_mlp(tp, sp):
    d = _data()

    def body(ctx):
        ps.initialize_model_parallel(ctx, tp)
        rank = ps.get_tensor_model_parallel_rank(ctx)
        mlp = L.ParallelMLP(ctx, H, FFN, sequence_parallel=sp, seed=5, keep_master_weight_for_test=True)
        mlp.dense_h_to_4h.bias[...] = ctx.tensor(_chunk(d["b_ffn"], rank, tp, 0))
        mlp.dense_4h_to_h.bias[...] = ctx.tensor(d["b_h"])
        x, g = (_chunk(d["x"], rank, tp, 0), _chunk(d["g_h"], rank, tp, 0)) if sp else (d["x"], d["g_h"])
        out, bias = mlp.forward(ctx.tensor(x))
        grad_in = mlp.backward(ctx.tensor(g))
        c, r = mlp.dense_h_to_4h, mlp.dense_4h_to_h
        return (out.numpy(), bias.numpy(), grad_in.numpy(), c.weight.grad.numpy(), c.bias.grad.numpy(),
                r.weight.grad.numpy(), r.bias.grad.numpy(), c.master_weight, r.master_weight)

    got = spawn(tp, body)
    ref = mlp_reference(d["x"], got[0][7], d["b_ffn"], got[0][8], d["g_h"])
    for rank, (out, bias, grad_in, gw1, gb1, gw2, gb2, _, _) in got.items():
        close(bias, d["b_h"])
        close(out, _chunk(ref["out"], rank, tp, 0) if sp else ref["out"])
        close(grad_in, _chunk(ref["grad_input"], rank, tp, 0) if sp else ref["grad_input"])
        close(gw1, _chunk(ref["grad_w1"], rank, tp, 0))
        close(gb1, _chunk(ref["grad_b1"], rank, tp, 0))
        close(gw2, _chunk(ref["grad_w2"], rank, tp, 1))
    close(sum(r[6] for r in got.values()) if sp else got[0][6], ref["grad_b2"])


@pytest.mark.parametrize("tp", [1, 4])
@pytest.mark.parametrize("sp", [False, True])
def test_vocab_parallel_embedding_equals_unsplit_lookup(tp, sp):
    vocab = 24
    ids = np.random.default_rng(1).integers(0, vocab, size=(B, S))
    g = np.random.default_rng(2).normal(size=(S, B, H) if sp else (B, S, H)).astype(np.float32)

    def body(ctx):
        ps.initialize_model_parallel(ctx, tp)
        rank = ps.get_tensor_model_parallel_rank(ctx)
        emb = L.VocabParallelEmbedding(ctx, vocab, H, reduce_scatter_embeddings=sp, seed=6,
                                       keep_master_weight_for_test=True)
        out = emb.forward(ctx.tensor(ids))
        assert emb.backward(ctx.tensor(_chunk(g, rank, tp, 0) if sp else g)) is None
        return out.numpy(), emb.weight.grad.numpy(), emb.master_weight

    got = spawn(tp, body)
    w = got[0][2]
    want = w[ids].transpose(1, 0, 2) if sp else w[ids]
    grad_w = np.zeros_like(w, dtype=np.float64)
    np.add.at(grad_w, ids, g.transpose(1, 0, 2) if sp else g)
    for rank, (out, gw, _) in got.items():
        close(out, _chunk(want, rank, tp, 0) if sp else want)
        close(gw, _chunk(grad_w, rank, tp, 0))


# -- the collectives each layer issues -----------------------------------------------------

def _issued(tp, build, backward):
    """Counter of (collective, group, bytes) on rank 0's stream for a forward (and backward)."""
    def worker(rank, ctx):
        ctx.distributed.init_process_group("nccl")
        ps.initialize_model_parallel(ctx, tp)
        layer, x, g = build(ctx, ps.get_tensor_model_parallel_rank(ctx))
        layer.forward(x)
        if backward:
            layer.backward(g)
        ctx.cuda.synchronize()  # the trace records an op when it completes

    with coopsim.RuntimeContext(topology="dgx_h100", timing_only=True) as ctx:
        with ctx.sim.trace() as recorder:
            ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=tp)
        events = recorder.events()
    return Counter((e["args"]["collective"], e["args"]["group"], e["args"]["bytes"])
                   for e in events if e.get("pid") == 0 and e.get("cat") == "stream" and "collective" in e["args"])


def _per_direction(tp, build):
    forward = _issued(tp, build, False)
    return forward, _issued(tp, build, True) - forward


E = 4  # bytes per float32 element
TP = 4
BYTES_H, BYTES_FFN = S * B * H * E, S * B * FFN * E  # whole [s, b, h] and [s, b, ffn] messages
AR, AG, RS = "all_reduce", "all_gather_single", "reduce_scatter_single"
LAYERS = {
    # name: (build(ctx, tp_rank) -> (layer, x, grad), forward collectives, backward collectives)
    "column": (lambda ctx, r: (L.ColumnParallelLinear(ctx, H, FFN), ctx.zeros(S, B, H), ctx.zeros(S, B, FFN // TP)),
               [], [(AR, BYTES_H)]),
    "column gather_output": (
        lambda ctx, r: (L.ColumnParallelLinear(ctx, H, FFN, gather_output=True), ctx.zeros(S, B, H), ctx.zeros(S, B, FFN)),
        [(AG, BYTES_FFN)], [(AR, BYTES_H)]),
    "column sequence_parallel": (
        lambda ctx, r: (L.ColumnParallelLinear(ctx, H, FFN, sequence_parallel=True), ctx.zeros(S // TP, B, H),
                        ctx.zeros(S, B, FFN // TP)),
        [(AG, BYTES_H)], [(AG, BYTES_H), (RS, BYTES_H)]),
    "row": (lambda ctx, r: (L.RowParallelLinear(ctx, FFN, H), ctx.zeros(S, B, FFN // TP), ctx.zeros(S, B, H)),
            [(AR, BYTES_H)], []),
    "row scatter_input": (
        lambda ctx, r: (L.RowParallelLinear(ctx, FFN, H, input_is_parallel=False), ctx.zeros(S, B, FFN), ctx.zeros(S, B, H)),
        [(AR, BYTES_H)], [(AG, BYTES_FFN)]),
    "row sequence_parallel": (
        lambda ctx, r: (L.RowParallelLinear(ctx, FFN, H, sequence_parallel=True), ctx.zeros(S, B, FFN // TP),
                        ctx.zeros(S // TP, B, H)),
        [(RS, BYTES_H)], [(AG, BYTES_H)]),
    "mlp": (lambda ctx, r: (L.ParallelMLP(ctx, H, FFN), ctx.zeros(S, B, H), ctx.zeros(S, B, H)),
            [(AR, BYTES_H)], [(AR, BYTES_H)]),
    "mlp sequence_parallel": (
        lambda ctx, r: (L.ParallelMLP(ctx, H, FFN, sequence_parallel=True), ctx.zeros(S // TP, B, H),
                        ctx.zeros(S // TP, B, H)),
        [(AG, BYTES_H), (RS, BYTES_H)], [(AG, BYTES_H), (AG, BYTES_H), (RS, BYTES_H)]),
    "embedding": (
        lambda ctx, r: (L.VocabParallelEmbedding(ctx, 4 * H, H), ctx.zeros(B, S, dtype=ctx.int64), ctx.zeros(B, S, H)),
        [(AR, BYTES_H)], []),
    "embedding reduce_scatter": (
        lambda ctx, r: (L.VocabParallelEmbedding(ctx, 4 * H, H, reduce_scatter_embeddings=True),
                        ctx.zeros(B, S, dtype=ctx.int64), ctx.zeros(S // TP, B, H)),
        [(RS, BYTES_H)], [(AG, BYTES_H)]),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_each_layer_issues_megatrons_collectives_per_direction(name):
    build, forward, backward = LAYERS[name]
    got_forward, got_backward = _per_direction(TP, build)
    assert got_forward == Counter((kind, "tp[0]", n) for kind, n in forward)
    assert got_backward == Counter((kind, "tp[0]", n) for kind, n in backward)


def test_tp1_issues_no_collective():
    def build(ctx, rank):
        return L.ParallelMLP(ctx, H, FFN, sequence_parallel=True), ctx.zeros(S, B, H), ctx.zeros(S, B, H)

    assert _per_direction(1, build) == (Counter(), Counter())


def test_mappings_forward_and_backward_are_conjugate():
    x = np.arange(4 * 2 * 8, dtype=np.float32).reshape(4, 2, 8)

    def body(ctx):
        ps.initialize_model_parallel(ctx, 2)
        r = ps.get_tensor_model_parallel_rank(ctx)
        t = ctx.tensor(x * (r + 1))
        return {name: (getattr(m, name)(ctx, t.clone()).numpy(), getattr(m, name).backward(ctx, t.clone()).numpy())
                for name in ("copy_to_tensor_model_parallel_region", "scatter_to_tensor_model_parallel_region",
                             "scatter_to_sequence_parallel_region")} | {
            "gather_sp_no_tp_grad": m.gather_from_sequence_parallel_region.backward(
                ctx, t, tensor_parallel_output_grad=False).numpy()}

    got = spawn(2, body)
    both = x * 1 + x * 2
    for r in (0, 1):
        mine = x * (r + 1)
        fwd, bwd = got[r]["copy_to_tensor_model_parallel_region"]
        close(fwd, mine), close(bwd, both)
        fwd, bwd = got[r]["scatter_to_tensor_model_parallel_region"]
        close(fwd, mine[..., r * 4:(r + 1) * 4])
        close(bwd, np.concatenate([x, 2 * x], axis=-1))
        fwd, bwd = got[r]["scatter_to_sequence_parallel_region"]
        close(fwd, mine[r * 2:(r + 1) * 2])
        close(bwd, np.concatenate([x, 2 * x], axis=0))
        close(got[r]["gather_sp_no_tp_grad"], mine[r * 2:(r + 1) * 2])


# -- reports name the group ----------------------------------------------------------------

def test_a_rank_missing_from_a_tp_collective_is_reported_with_the_groups_name():
    def worker(rank, ctx):
        ctx.distributed.init_process_group("nccl")
        ps.initialize_model_parallel(ctx, 2)
        layer = L.RowParallelLinear(ctx, FFN, H)
        if rank == 3:
            return  # never joins its TP group's all_reduce
        out, _ = layer.forward(ctx.zeros(S, B, FFN // 2))
        out.numpy()

    with coopsim.RuntimeContext(topology="dgx_h100") as ctx:
        with pytest.raises(coopsim.DeadlockError) as info:
            ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=4)
    assert "all_reduce #1 on group tp[1]: arrived [2], missing [3]" in str(info.value)


# -- the benchmark's communication equals the bare collectives -----------------------------

@pytest.mark.parametrize("sp", [False, True])
def test_tp8_layer_communication_equals_the_bare_collectives(sp):
    from coopsim.tp.measure import collectives_time_ns, measure_mlp

    def dgx(**options):
        return coopsim.RuntimeContext(topology="dgx_h100", **options)

    seq, batch, hidden, ffn, tp = 4096, 1, 8192, 28672, 8
    got = measure_mlp(dgx, tp, hidden=hidden, ffn=ffn, seq=seq, batch=batch,
                      dtype="bfloat16", sequence_parallel=sp)
    whole, chunk = (seq, batch, hidden), (seq // tp, batch, hidden)
    if sp:  # forward: gather + reduce-scatter; backward: gather, gather, reduce-scatter
        forward = [("all_gather", chunk, "bfloat16"), ("reduce_scatter", chunk, "bfloat16")]
        backward = [("all_gather", chunk, "bfloat16")] * 2 + [("reduce_scatter", chunk, "bfloat16")]
    else:
        forward = backward = [("all_reduce", whole, "bfloat16")]
    for phase, calls in (("forward", forward), ("backward", backward)):
        want = collectives_time_ns(dgx, calls)
        assert want > 0
        assert got[phase]["communication_ns"] == pytest.approx(want, rel=0.01)
