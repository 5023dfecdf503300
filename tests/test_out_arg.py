"""``out=`` of the elementwise torch functions (coopsim/tensor/outarg.py): the result is
written into ``out``, which is returned; PyTorch's checks; the cost of the plain call."""

import numpy as np
import pytest

import coopsim
from coopsim.tensor import outarg


@pytest.fixture
def ctx():
    with coopsim.RuntimeContext() as c:
        yield c


@pytest.mark.parametrize("name", sorted(set(outarg.NAMES) | {"clip"}))
def test_every_out_function_writes_the_plain_result_into_out(ctx, name):
    a = ctx.tensor([0.5, 1.0, 2.0, 3.0])
    b = ctx.tensor([2.0, 1.0, 0.5, 3.0])
    if name in ("bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "remainder",
                "floor_divide"):
        a, b = ctx.tensor([5, 6, 7, 8]), ctx.tensor([1, 2, 3, 4])
    if name in ("matmul", "mm"):
        args = (a.reshape(2, 2), b.reshape(2, 2))
    elif name == "bmm":
        args = (a.reshape(1, 2, 2), b.reshape(1, 2, 2))
    elif name in ("clamp", "clip"):
        args = (a, 1.0, 2.5)
    elif name in outarg.UNARY_FLOPS:
        args = (a,)
    else:
        args = (a, b)
    want = getattr(ctx, name)(*args)
    out = ctx.zeros(*want.shape, dtype=want.dtype)
    got = getattr(ctx, name)(*args, out=out)
    assert got is out
    assert np.array_equal(out.numpy(), want.numpy(), equal_nan=True)


def test_out_may_be_an_input_and_alpha_goes_with_it(ctx):
    a, b = ctx.ones(3), ctx.full((3,), 2.0)
    assert ctx.add(a, b, alpha=3, out=a) is a
    assert a.tolist() == [7.0] * 3


def test_out_costs_what_the_plain_call_costs(ctx):
    a, b, c = ctx.ones(1 << 20), ctx.ones(1 << 20), ctx.zeros(1 << 20)
    ctx.cuda.synchronize()
    start = ctx.sim.now_ns()
    ctx.mul(a, b)
    ctx.cuda.synchronize()
    plain = ctx.sim.now_ns() - start
    start = ctx.sim.now_ns()
    ctx.mul(a, b, out=c)
    ctx.cuda.synchronize()
    assert ctx.sim.now_ns() - start == pytest.approx(plain, rel=1e-12)


def test_out_errors_name_what_is_wrong(ctx):
    a = ctx.ones(3)
    with pytest.raises(RuntimeError, match=r"out= has shape \[4\] but the result has shape \[3\]"):
        ctx.add(a, a, out=ctx.zeros(4))
    with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type Long"):
        ctx.exp(a, out=ctx.zeros(3, dtype=ctx.int64))
    with pytest.raises(RuntimeError, match="Found dtype Bool but expected Long"):
        ctx.clamp(ctx.tensor([1, 2, 3]), 0, 2, out=ctx.zeros(3, dtype=ctx.bool))
    with pytest.raises(RuntimeError, match="Found dtype Double but expected Float"):
        ctx.clamp(a, 0, 2, out=ctx.zeros(3, dtype=ctx.float64))
    with pytest.raises(TypeError, match="argument 'out' must be Tensor, not list"):
        ctx.neg(a, out=[0.0] * 3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'alpha'"):
        ctx.mul(a, a, alpha=2)
    m = ctx.ones(2, 2)
    with pytest.raises(RuntimeError, match="Expected out tensor to have dtype float, but got double instead"):
        ctx.matmul(m, m, out=ctx.zeros(2, 2, dtype=ctx.float64))
    with pytest.raises(RuntimeError, match="to have dtype float, but got c10::BFloat16 instead"):
        ctx.bmm(m.reshape(1, 2, 2), m.reshape(1, 2, 2), out=ctx.zeros(1, 2, 2, dtype=ctx.bfloat16))
    with pytest.raises(RuntimeError, match=r"out= has shape \[4\] but the result has shape \[2, 2\]"):
        ctx.mm(m, m, out=ctx.zeros(4))
    assert a.tolist() == [1.0] * 3  # nothing was written by the calls that raised
    assert m.tolist() == [[1.0, 1.0]] * 2

