"""Plain PyTorch programs run on coopsim unmodified except for where ``torch`` comes from
(issue 10): a data-parallel training loop and a Megatron-style column/row-parallel MLP,
with results equal to a numpy reference. Device time of two op families follows the
roofline rule (docs/adr/0016-torch-surface.md)."""

import math

import numpy as np
import pytest

import coopsim

WORLD = 4


# -- the programs: plain PyTorch; `torch` is a parameter ---------------------------------------

def data_parallel_train(rank, world_size, torch, steps, out):
    """Linear regression, data parallel: gradients computed explicitly, averaged with all_reduce."""
    F = torch.nn.functional
    dist = torch.distributed
    dist.init_process_group("nccl")
    torch.cuda.set_device(rank)
    torch.manual_seed(0)
    features, samples = 8, 64
    w = torch.randn(features, 1) * 0.1
    x_all = torch.randn(samples, features)
    true_w = torch.linspace(-1, 1, features).reshape(features, 1)
    y_all = torch.matmul(x_all, true_w) + 0.01 * torch.randn(samples, 1)
    x = x_all.chunk(world_size, dim=0)[rank]
    y = y_all.chunk(world_size, dim=0)[rank]
    losses = []
    for _ in range(steps):
        pred = torch.matmul(x, w)
        err = pred - y
        loss = (err ** 2).mean()
        grad = 2 * torch.matmul(x.T, err) / x.shape[0]
        dist.all_reduce(grad)
        grad /= world_size
        w -= 0.1 * grad
        losses.append(loss)
    big = (F.relu(w.abs() - 0.5) > 0).sum()
    out[rank] = {"w": w.cpu().numpy(), "w0_x_y": (x_all.cpu().numpy(), y_all.cpu().numpy()),
                 "losses": [l.item() for l in losses], "big": big.item()}
    dist.destroy_process_group()


def megatron_mlp(rank, world_size, torch, out):
    """Y = gelu(X W1^T) W2^T with W1 split by rows (column-parallel) and W2 by columns
    (row-parallel); one all_reduce sums the partial outputs."""
    F = torch.nn.functional
    dist = torch.distributed
    dist.init_process_group("nccl")
    torch.cuda.set_device(rank)
    torch.manual_seed(1234)
    hidden, batch = 16, 6
    x = torch.randn(batch, hidden)
    w1 = torch.randn(4 * hidden, hidden) / math.sqrt(hidden)
    w2 = torch.randn(hidden, 4 * hidden) / math.sqrt(4 * hidden)
    w1_part = w1.chunk(world_size, dim=0)[rank]
    w2_part = w2.chunk(world_size, dim=1)[rank]
    h = F.gelu(torch.matmul(x, w1_part.T), approximate="tanh")
    y = torch.matmul(h, w2_part.T)
    dist.all_reduce(y)
    positive = (y > 0).sum()
    out[rank] = {"y": y.cpu().numpy(), "x_w1_w2": (x.cpu().numpy(), w1.cpu().numpy(), w2.cpu().numpy()),
                 "positive": positive.item()}
    dist.destroy_process_group()


def run(program, *args):
    out = {}
    with coopsim.RuntimeContext() as ctx:
        ctx.multiprocessing.spawn(program, args=(WORLD, ctx, *args, out), nprocs=WORLD)
    return out


# -- the numpy references -------------------------------------------------------------------------

def test_data_parallel_training_loop_equals_numpy():
    steps = 5
    out = run(data_parallel_train, steps)
    x_all, y_all = out[0]["w0_x_y"]
    for r in range(1, WORLD):  # same manual seed: every replica starts from the same data
        np.testing.assert_array_equal(out[r]["w0_x_y"][0], x_all)
    w_final = out[0]["w"]
    for r in range(1, WORLD):
        np.testing.assert_array_equal(out[r]["w"], w_final)  # replicas stay identical
    with coopsim.RuntimeContext() as ctx:  # the same draws, on the host, in the same order
        ctx.manual_seed(0)
        w0 = (ctx.randn(8, 1) * 0.1).numpy()
    w = w0.astype(np.float64)
    losses = []
    shards = np.split(x_all, WORLD), np.split(y_all, WORLD)
    for _ in range(steps):
        grads, step_losses = [], []
        for xs, ys in zip(*shards):
            err = xs @ w - ys
            step_losses.append((err ** 2).mean())
            grads.append(2 * xs.T @ err / xs.shape[0])
        w = w - 0.1 * sum(grads) / WORLD
        losses.append(step_losses[0])
    np.testing.assert_allclose(w_final, w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[0]["losses"], losses, rtol=1e-4)
    assert out[0]["losses"][-1] < out[0]["losses"][0]
    assert out[0]["big"] == int((np.maximum(np.abs(w) - 0.5, 0) > 0).sum())


def test_megatron_column_row_parallel_mlp_equals_numpy():
    out = run(megatron_mlp)
    x, w1, w2 = (a.astype(np.float64) for a in out[0]["x_w1_w2"])
    pre = x @ w1.T
    h = 0.5 * pre * (1 + np.tanh(math.sqrt(2 / math.pi) * (pre + 0.044715 * pre ** 3)))
    expected = h @ w2.T
    for r in range(WORLD):
        np.testing.assert_allclose(out[r]["y"], expected, rtol=1e-4, atol=1e-5)
        assert out[r]["positive"] == int((out[r]["y"] > 0).sum())


# -- roofline for two new op families --------------------------------------------------------------

def _op_time(ctx, fn):
    """Virtual ns of the one device op ``fn`` enqueues on an idle device 0."""
    ctx.cuda.synchronize()
    start = ctx.engine.now_ns
    result = fn()
    ctx.cuda.synchronize()
    return ctx.engine.now_ns - start, result


@pytest.mark.parametrize("n", [1 << 10, 1 << 20])
def test_roofline_of_the_elementwise_functional_family(n):
    """gelu: bytes read + written at memory bandwidth vs 8 flops an element at peak."""
    with coopsim.RuntimeContext("dgx_h100") as ctx:
        dev = ctx.sim.runtime.devices[0]
        kind = dev.kind
        x = ctx.ones(n)
        elapsed, _ = _op_time(ctx, lambda: ctx.nn.functional.gelu(x))
        memory = 2 * 4 * n / kind.memory_bandwidth_GBps
        compute = 8 * n * 1e9 / kind.peak_flops["float32"]
        assert elapsed == pytest.approx(kind.launch_overhead_ns + max(memory, compute))


def test_roofline_of_the_matmul_family_in_float64():
    """bmm/einsum charge 2*b*m*n*k flops at the float64 peak; a compute-bound case shows it."""
    with coopsim.RuntimeContext("dgx_a100") as ctx:
        kind = ctx.sim.runtime.devices[0].kind
        b, m, k, n = 4, 256, 512, 128
        x = ctx.ones(b, m, k, dtype=ctx.float64)
        y = ctx.ones(b, k, n, dtype=ctx.float64)
        for fn in (lambda: ctx.bmm(x, y), lambda: ctx.einsum("bmk,bkn->bmn", x, y)):
            elapsed, r = _op_time(ctx, fn)
            memory = 8 * (b * m * k + b * k * n + b * m * n) / kind.memory_bandwidth_GBps
            compute = 2 * b * m * n * k * 1e9 / kind.peak_flops["float64"]
            assert compute > memory
            assert elapsed == pytest.approx(kind.launch_overhead_ns + compute)
            assert r.dtype is ctx.float64 and r[0, 0, 0].item() == k


def test_roofline_of_copies_charges_bytes_only():
    with coopsim.RuntimeContext("dgx_h100") as ctx:
        kind = ctx.sim.runtime.devices[0].kind
        a = ctx.ones(1 << 20)
        elapsed, _ = _op_time(ctx, lambda: ctx.cat([a, a]))
        assert elapsed == pytest.approx(kind.launch_overhead_ns + (4 << 20) * 4 / kind.memory_bandwidth_GBps)
