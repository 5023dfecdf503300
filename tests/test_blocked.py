"""The blocked all-reduce (ADR-0027): same bits as the whole-buffer reduction, and used only on
buffers where blocks cannot interfere."""

import numpy as np

import coopsim
from coopsim.distributed.blocked import BLOCK_BYTES, all_reduce_blocks, apart, block_moves, fusable

N = BLOCK_BYTES // 4 * 3 + 17  # three float32 blocks and a ragged end


def _inputs(p, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(N) * 10.0 ** rng.integers(-3, 4)).astype(np.float32) for _ in range(p)]


def test_c9_blocked_all_reduce_has_the_bits_of_the_rank_order_reduction():
    for p, post in ((1, None), (2, None), (5, None), (5, lambda a: a / 5)):
        ins = _inputs(p, seed=p)
        expected = ins[0].copy()
        for x in ins[1:]:
            np.add(expected, x, out=expected)
        if post is not None:
            expected = post(expected)
        outs = [x.copy() for x in ins]  # in place: each rank's output is its input
        assert fusable(outs, outs)
        all_reduce_blocks(np.add, outs, outs, post)
        for out in outs:
            assert out.tobytes() == expected.astype(np.float32).tobytes()


def test_fusable_refuses_small_strided_and_overlapping_buffers():
    ins = _inputs(3)
    outs = [np.empty_like(x) for x in ins]
    assert fusable(ins, outs)
    assert not fusable([x[:8] for x in ins], [x[:8] for x in outs])  # one block: no gain
    assert not fusable([x[::2] for x in ins], [x[::2] for x in outs])
    shared = np.zeros(2 * N, dtype=np.float32)
    assert not fusable([shared[:N], ins[1]], [shared[1:N + 1], outs[1]])  # rank 0's out overlaps its in
    assert not fusable([ins[0], ins[1]], [outs[0], ins[0]])  # rank 1 writes rank 0's input
    assert not fusable([ins[0], ins[0]], [ins[0], ins[0]])  # one array for two ranks, in place
    assert fusable([x[:] for x in ins], [x[:] for x in ins])  # views: by their address ranges


def test_a_large_all_reduce_gives_the_rank_order_sum_analytic_and_nvls():
    inputs = _inputs(3, seed=7)
    expected = (inputs[0] + inputs[1]) + inputs[2]
    for ccl in ({"model": "analytic"}, {"model": "transfer", "algorithms": {"all_reduce": "nvls"}}):
        got = {}

        def worker(rank, ctx):
            dist = ctx.distributed
            dist.init_process_group("nccl")
            t = ctx.tensor(inputs[rank])
            dist.all_reduce(t)
            got[rank] = t.numpy().copy() if hasattr(t, "numpy") else t.cpu().numpy().copy()

        with coopsim.RuntimeContext("dgx_h100", ccl=ccl) as ctx:
            ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=3)
        for rank in range(3):
            assert got[rank].tobytes() == expected.tobytes(), (ccl, rank)


def test_block_moves_cuts_each_interval_and_keeps_the_listed_order_within_a_block():
    # (src, dst, src lo, src hi, dst lo, dst hi, reduce): a chain over [0, 6), then one over [6, 9)
    items = [(0, 1, 0, 6, 0, 6, True), (3, 4, 6, 9, 6, 9, False), (1, 2, 0, 6, 0, 6, False)]
    assert block_moves(items, 4) == [
        (0, 1, 0, 4, 0, 4, True), (1, 2, 0, 4, 0, 4, False),
        (0, 1, 4, 6, 4, 6, True), (1, 2, 4, 6, 4, 6, False),
        (3, 4, 6, 9, 6, 9, False)]


def test_block_moves_refuses_moves_that_shift_or_partly_overlap_intervals():
    assert block_moves([(0, 1, 0, 4, 4, 8, False), (1, 2, 4, 8, 4, 8, False)], 2) is None
    assert block_moves([(0, 1, 0, 4, 0, 4, False), (1, 2, 2, 6, 2, 6, True)], 2) is None


def test_c9_transfer_runs_in_blocks_have_the_bits_of_the_event_model(monkeypatch):
    """Several blocks per chunk, SUM of random floats (so the order shows in the bits): the
    closed-form run's block order gives the event model's bits, and was taken."""
    from coopsim.distributed import execution

    used = []

    def spy(items, block):
        found = block_moves(items, block)
        used.append(found is not None and len(found) > len(items))
        return found

    monkeypatch.setattr(execution, "block_moves", spy)
    count = 4 * (BLOCK_BYTES // 4) * 3 + 29  # each of 4 ranks' ring chunks spans 3+ blocks
    results = []
    for closed, algorithm in ((True, "ring"), (False, "ring"), (True, "binomial_tree"), (False, "binomial_tree")):
        got = {}

        def worker(rank, ctx):
            dist = ctx.distributed
            dist.init_process_group("nccl")
            rng = np.random.default_rng(rank)
            t = ctx.tensor((rng.standard_normal(count) * 10.0 ** rank).astype(np.float32))
            dist.all_reduce(t)
            got[rank] = t.numpy().tobytes()

        with coopsim.RuntimeContext("dgx_h100", ccl={"model": "transfer", "protocol": "Simple",
                                                    "algorithms": {"all_reduce": algorithm}}) as ctx:
            ctx.sim.runtime.network.closed_form = closed
            ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=4)
            assert ctx.sim.runtime.network.claims == (1 if closed else 0)
        results.append(got)
    assert results[0] == results[1] and results[2] == results[3]
    assert used and all(used)


def test_apart_admits_a_rank_whose_output_is_its_input_or_lies_elsewhere():
    a, b, c = (np.zeros(8, np.float32) for _ in range(3))
    assert apart([a, b], [a, c])  # rank 0 in place, rank 1 out of place
    assert apart([a, None], [a, c])
    assert apart([a[:4]], [a[:4]])  # two views of the same elements
    assert not apart([a[:4]], [a[2:6]])  # rank 0's output overlaps its input, shifted
