"""The fast paths of a tiny collective (docs/adr/0037): each gives what the general path gives."""

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from coopsim.distributed.execution import reference
from coopsim.runtime.frames import site_line, user_site


def _fold(op, xs, post=None):
    """The general path's all-reduce: ``op(acc, x, out=acc)`` in rank order."""
    acc = xs[0].copy()
    with np.errstate(all="ignore"):
        for x in xs[1:]:
            op(acc, x, out=acc)
    return acc if post is None else post(acc)


def _cases():
    nan, neg_nan = np.float32(np.nan), -np.float32(np.nan)
    yield np.add, [[nan], [neg_nan], [1.0]], np.float32  # two NaNs of opposite sign meet
    yield np.add, [[neg_nan], [nan]], np.float32
    yield np.add, [[1.0], [neg_nan], [nan]], np.float64
    yield np.multiply, [[neg_nan], [2.0], [nan]], np.float32
    yield np.add, [[np.inf], [-np.inf], [3.0]], np.float32  # inf - inf: a NaN made on the way
    yield np.add, [[3e38], [3e38], [-3e38]], np.float32  # overflow, then stays inf
    yield np.add, [[-0.0], [-0.0]], np.float32
    yield np.add, [[0.1], [0.2], [0.3], [1e8], [-1e8]], np.float32  # rounding, in rank order
    yield np.maximum, [[nan], [neg_nan], [5.0]], np.float32
    yield np.minimum, [[1.0], [neg_nan], [nan]], np.float64
    yield np.add, [[2**31 - 1], [1], [5]], np.int32  # wraps around
    yield np.bitwise_xor, [[7], [12], [-1]], np.int64
    yield np.add, [[True], [False]], np.bool_
    yield np.add, [[0.5, 1.0], [0.25, np.nan]], np.float32  # two elements: not the fast path
    yield np.add, [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.5]], np.float16


@pytest.mark.parametrize("op, values, dtype", list(_cases()))
@pytest.mark.parametrize("in_place", [True, False])
@pytest.mark.parametrize("avg", [False, True])
def test_a_tiny_all_reduce_is_the_rank_order_fold_bit_for_bit(op, values, dtype, in_place, avg):
    """``reference`` runs one-element all-reduces through ``op.accumulate``; every output
    bit, NaN signs included, must be the elementwise fold's."""
    xs = [np.array(v, dtype=dtype) for v in values]
    post = (lambda a: a / len(xs)) if avg and np.dtype(dtype).kind == "f" else None
    want = _fold(op, xs, post)
    ins = [x.copy() for x in xs]
    outs = ins if in_place else [np.full_like(x, 7) for x in xs]
    plan = SimpleNamespace(ufunc=op, collective="all_reduce", root=None, post=post)
    with np.errstate(all="ignore"):
        reference(plan, [SimpleNamespace(ins=i, outs=o) for i, o in zip(ins, outs)])
    for out in outs:
        assert out.dtype == want.dtype and out.tobytes() == want.tobytes()
    if not in_place:
        assert all(i.tobytes() == x.tobytes() for i, x in zip(ins, xs))


def test_c9_a_one_float_average_across_ranks_is_the_mean_in_rank_order(ctx):
    got = {}

    def rank(r, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        t = ctx.full((1,), [0.1, 0.7, 1e7][r])
        dist.all_reduce(t, op=dist.ReduceOp.AVG)
        got[r] = t.numpy().tobytes()

    ctx.multiprocessing.spawn(rank, args=(ctx,), nprocs=3)
    want = _fold(np.add, [np.array([v], np.float32) for v in (0.1, 0.7, 1e7)], lambda a: a / 3)
    assert got == {r: want.tobytes() for r in range(3)}


def test_c11_a_rank_that_re_initialises_with_gloo_issues_on_the_gloo_stream(ctx):
    """The group's stream is cached per member (ADR-0037) only while its device and backend
    stay: after ``destroy_process_group`` and a gloo init, the op goes on "gloo WORLD"."""
    seen = {}

    def rank(r, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        t = ctx.ones(1)
        dist.all_reduce(t)
        device = ctx.sim.runtime.devices[r]
        seen[r, "nccl"] = device.named_stream("nccl WORLD").last.desc
        t.item()
        dist.destroy_process_group()
        dist.init_process_group("gloo")
        dist.all_reduce(t)
        seen[r, "gloo"] = device.named_stream("gloo WORLD").last.desc
        seen[r, "value"] = t.item()

    ctx.multiprocessing.spawn(rank, args=(ctx,), nprocs=2)
    for r in range(2):
        assert seen[r, "nccl"] == f"all_reduce #1 on group WORLD on dev{r}"
        assert seen[r, "gloo"] == f"all_reduce #2 on group WORLD on dev{r}"
        assert seen[r, "value"] == 4.0


def _probe():
    caller = sys._getframe(1)
    return caller.f_lineno, site_line(user_site(caller, {}))


def test_c7_a_sites_line_is_the_line_f_lineno_gives():
    """A site keeps the frame's instruction offset; its line, looked up when a report reads
    it, is the line ``f_lineno`` gives at the call, also for calls over several lines."""
    one = _probe()
    spread = (_probe
              (
              ))
    inner = [_probe() for _ in range(1)][0]
    for lineno, line in (one, spread, inner):
        assert line == lineno
    assert one[0] != spread[0] != inner[0]
