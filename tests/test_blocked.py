"""The blocked all-reduce (ADR-0027): same bits as the whole-buffer reduction, and used only on
buffers where blocks cannot interfere."""

import numpy as np

import coopsim
from coopsim.distributed.blocked import BLOCK_BYTES, all_reduce_blocks, fusable

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
