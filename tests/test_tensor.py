"""Device tensors: the host-read barrier (C8), numerics against numpy, views, determinism (C9)."""

import copy
import gc
import operator
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coopsim.engine import OutOfMemoryError
from coopsim.context import RuntimeContext
from coopsim.tensor.ops import int64, round_bfloat16
from coopsim.tensor.tensor import _DEVICE_SIDE, _HOST_READ_BARRIERS, Tensor

make_ctx = RuntimeContext


@pytest.fixture
def ctx():
    with make_ctx() as c:
        yield c


@pytest.fixture(scope="module")
def mctx():
    """One context for the many small numeric checks (hypothesis reruns a test body)."""
    with make_ctx() as c:
        yield c


def spawn(ctx, fn, nprocs, *args):
    return ctx.multiprocessing.spawn(fn, args=(ctx, *args), nprocs=nprocs)


F32, F16, I32, I64 = np.float32, np.float16, np.int32, np.int64
NP_DTYPES = {"float32": F32, "float16": F16, "int32": I32, "int64": I64}


def dtype_of(ctx, name):
    return getattr(ctx, name)


def sample(shape, np_dtype, seed=0, nonzero=False):
    rng = np.random.default_rng(seed)
    if np.dtype(np_dtype).kind == "f":
        a = rng.uniform(-10, 10, shape)
        if nonzero:
            a = np.where(np.abs(a) < 0.5, 1.5, a)
    else:
        a = rng.integers(-50, 50, shape)
        if nonzero:
            a = np.where(a == 0, 7, a)
    return np.asarray(a).astype(np_dtype)


# -- C8: the registry is closed -------------------------------------------------------------

def _tensor_surface() -> set:
    """Every public name of Tensor, and every dunder method Tensor and its coopsim bases define."""
    public = {n for n in dir(Tensor) if not n.startswith("_")}
    dunders = {n for cls in Tensor.__mro__ if cls is not object for n, v in vars(cls).items()
               if n.startswith("__") and n.endswith("__") and callable(v)}
    return public | dunders


def test_c8_registry_is_closed_every_entry_point_is_decided_exactly_once():
    surface = _tensor_surface()
    undecided = surface - _HOST_READ_BARRIERS - _DEVICE_SIDE
    assert not undecided, f"add these Tensor names to _HOST_READ_BARRIERS or _DEVICE_SIDE: {sorted(undecided)}"
    assert not (_HOST_READ_BARRIERS & _DEVICE_SIDE)
    stale = (_HOST_READ_BARRIERS | _DEVICE_SIDE) - surface
    assert not stale, f"registry names that Tensor does not have: {sorted(stale)}"


def test_c8_registry_lists_the_issue_host_reads_and_len_as_metadata():
    assert {"numpy", "tolist", "item", "__array__", "__repr__", "__str__", "__bool__", "__float__",
            "__int__", "__index__", "__iter__", "__format__"} <= _HOST_READ_BARRIERS
    assert "__len__" in _DEVICE_SIDE


# Each host-read entry point: (dtype of the tensor, how to call it, what it must return for a
# one-element tensor holding 6).
HOST_READS = {
    "numpy": ("float32", lambda t: t.numpy(), lambda r: r.tolist() == [6.0] and r.dtype == F32),
    "tolist": ("float32", lambda t: t.tolist(), lambda r: r == [6.0]),
    "item": ("float32", lambda t: t.item(), lambda r: r == 6.0 and type(r) is float),
    "__array__": ("float32", lambda t: np.asarray(t), lambda r: r.tolist() == [6.0]),
    "__repr__": ("float32", repr, lambda r: r == "tensor([6.], device='cuda:0')"),
    "__str__": ("int32", str, lambda r: r == "tensor([6], device='cuda:0', dtype=torch.int32)"),
    "__format__": ("float32", lambda t: format(t[0], ".2f"), lambda r: r == "6.00"),
    "__bool__": ("float32", bool, lambda r: r is True),
    "__float__": ("int64", float, lambda r: r == 6.0),
    "__int__": ("float32", int, lambda r: r == 6),
    "__index__": ("int64", operator.index, lambda r: r == 6),
    "__iter__": ("float32", lambda t: iter(t), lambda r: [v.item() for v in r] == [6.0]),
    "cpu": ("float32", lambda t: t.cpu(), lambda r: r.is_cpu and r.tolist() == [6.0]),
    "allclose": ("float32", lambda t: t.allclose(t), lambda r: r is True),
    "equal": ("int64", lambda t: t.equal(t), lambda r: r is True),
    "nonzero": ("float32", lambda t: t.nonzero(), lambda r: r.tolist() == [[0]] and r.dtype == int64),
    "masked_select": ("float32", lambda t: t.masked_select(t > 0), lambda r: r.tolist() == [6.0]),
    "unique": ("int64", lambda t: t.unique(return_counts=True), lambda r: [x.tolist() for x in r] == [[6], [1]]),
    "bincount": ("int64", lambda t: t.bincount(), lambda r: r.tolist() == [0] * 6 + [1] and r.dtype == int64),
}
# host reads that enqueue ops of their own (a copy, a comparison) and wait for them too
WAITS_FOR_ITS_OWN_OPS = {"cpu", "allclose", "equal"}
# host reads whose result's size depends on values: they wait for the data (the op, or the
# comparison making the mask), then enqueue their own op and leave it running, as torch
READS_THEN_ENQUEUES = {"nonzero", "masked_select", "unique", "bincount"}


def test_c8_every_host_read_is_tested():
    assert set(HOST_READS) == _HOST_READ_BARRIERS


def _pending_six(ctx, dtype_name):
    """A one-element tensor whose value 6 is computed by an op that has not completed."""
    t = ctx.full((1,), 2, dtype=dtype_of(ctx, dtype_name)) * 3
    op = t._storage.last_write
    assert not op.done and ctx.engine.now_ns == 0.0
    return t, op


@pytest.mark.parametrize("name", sorted(HOST_READS))
def test_c8_host_read_waits_for_the_op_and_sees_its_value(ctx, name):
    dtype_name, call, ok = HOST_READS[name]
    t, op = _pending_six(ctx, dtype_name)
    result = call(t)
    assert op.done
    last = ctx.sim.runtime.devices[0].stream.last
    if name in READS_THEN_ENQUEUES:
        assert not last.done and ctx.engine.now_ns >= op.time_ns
        assert ctx.engine.now_ns == op.time_ns or name == "masked_select"  # (waited for t > 0)
    else:
        assert last is op or name in WAITS_FOR_ITS_OWN_OPS
        assert ctx.engine.now_ns == last.time_ns  # the clock advanced exactly to the op's completion
    assert ok(result), result


@pytest.mark.parametrize("name", sorted(HOST_READS))
def test_c8_every_host_read_goes_through_the_one_helper(ctx, name, monkeypatch):
    dtype_name, call, _ = HOST_READS[name]
    t, _ = _pending_six(ctx, dtype_name)
    calls = []
    read = Tensor._read

    def spy(self):
        calls.append(self)
        return read(self)

    monkeypatch.setattr(Tensor, "_read", spy)
    call(t)
    assert calls, f"{name} read data without Tensor._read"


def test_c8_host_read_validates_before_waiting(ctx):
    t = ctx.ones(2) * 2
    for bad in (lambda: t.item(), lambda: bool(t), lambda: float(t), lambda: operator.index(t)):
        with pytest.raises((RuntimeError, ValueError, TypeError)):
            bad()
    with pytest.raises(TypeError, match="0-d"):
        iter(t.sum())
    assert ctx.engine.now_ns == 0.0 and ctx.engine.steps == 0


def test_c8_read_does_not_wait_for_unrelated_work_on_another_device(ctx):
    a = ctx.ones(4, device="cuda:0") + 1
    big = ctx.ones(1024, 1024, device="cuda:1")
    slow = big @ big
    assert a.tolist() == [2.0] * 4
    assert ctx.engine.now_ns == a._storage.last_write.time_ns
    assert not slow._storage.last_write.done


def test_c8_read_does_not_wait_for_later_work_on_the_same_stream(ctx):
    a = ctx.ones(4) + 1
    big = ctx.ones(512, 512)
    later = big @ big  # queued behind a's op, on the same stream
    a.numpy()
    assert ctx.engine.now_ns == a._storage.last_write.time_ns
    assert not later._storage.last_write.done
    later.sum().item()
    assert later._storage.last_write.done


def test_c8_a_view_waits_for_the_writer_of_its_storage(ctx):
    base = ctx.zeros(4)
    base[1:3] = 5.0  # an op writing through a view
    view = base[2]
    assert view.item() == 5.0 and ctx.engine.now_ns == base._storage.last_write.time_ns


# Each device-side name: how to call it on a float32 matrix ``t`` (pending) and a spare ``u``.
DEVICE_CALLS = {
    "shape": lambda t, u: t.shape, "dtype": lambda t, u: t.dtype, "device": lambda t, u: t.device,
    "ndim": lambda t, u: t.ndim, "is_cuda": lambda t, u: t.is_cuda, "numel": lambda t, u: t.numel(),
    "element_size": lambda t, u: t.element_size(), "dim": lambda t, u: t.dim(),
    "size": lambda t, u: t.size(1), "stride": lambda t, u: t.stride(),
    "is_contiguous": lambda t, u: t.is_contiguous(), "storage_offset": lambda t, u: t[1].storage_offset(),
    "__len__": lambda t, u: len(t), "view": lambda t, u: t.view(-1), "reshape": lambda t, u: t.reshape(3, 2),
    "transpose": lambda t, u: t.transpose(0, 1), "t": lambda t, u: t.t(), "__getitem__": lambda t, u: t[0, 1:],
    "add": lambda t, u: t.add(u), "add_": lambda t, u: u.add_(t), "sub": lambda t, u: t.sub(1),
    "sub_": lambda t, u: u.sub_(t), "mul": lambda t, u: t.mul(u), "mul_": lambda t, u: u.mul_(2),
    "div": lambda t, u: t.div(u), "div_": lambda t, u: u.div_(t), "matmul": lambda t, u: t.matmul(u.t()),
    "sum": lambda t, u: t.sum(0), "mean": lambda t, u: t.mean(), "max": lambda t, u: t.max(1),
    "copy_": lambda t, u: u.copy_(t), "clone": lambda t, u: t.clone(),
    "contiguous": lambda t, u: t.t().contiguous(), "fill_": lambda t, u: u.fill_(1),
    "zero_": lambda t, u: u.zero_(), "to": lambda t, u: t.to(t.dtype), "cuda": lambda t, u: t.cuda(),
    "float": lambda t, u: t.float(), "half": lambda t, u: t.half(), "bfloat16": lambda t, u: t.bfloat16(),
    "int": lambda t, u: t.int(), "long": lambda t, u: t.long(),
    "__setitem__": lambda t, u: u.__setitem__(0, t[1]), "__neg__": lambda t, u: -t,
    "__add__": lambda t, u: t + u, "__radd__": lambda t, u: 1 + t, "__iadd__": lambda t, u: u.__iadd__(t),
    "__sub__": lambda t, u: t - u, "__rsub__": lambda t, u: 1 - t, "__isub__": lambda t, u: u.__isub__(t),
    "__mul__": lambda t, u: t * u, "__rmul__": lambda t, u: 2 * t, "__imul__": lambda t, u: u.__imul__(t),
    "__truediv__": lambda t, u: t / u, "__rtruediv__": lambda t, u: 1 / t,
    "__itruediv__": lambda t, u: u.__itruediv__(t), "__matmul__": lambda t, u: t @ u.t(),
    "__rmatmul__": lambda t, u: t.__rmatmul__(u), "__deepcopy__": lambda t, u: copy.deepcopy(t),
    "__init__": lambda t, u: pytest.raises(TypeError, Tensor),
    "__hash__": lambda t, u: hash(t), "__eq__": lambda t, u: pytest.raises(TypeError, lambda: t == u),
    "__ne__": lambda t, u: pytest.raises(TypeError, lambda: t != u),
    "__reduce_ex__": lambda t, u: pytest.raises(TypeError, pickle.dumps, t),
}

# The torch surface (docs/adr/0016-torch-surface.md): families first, then one call a name.
_UNARY = ("abs", "neg", "sign", "exp", "log", "log2", "log1p", "expm1", "sqrt", "rsqrt", "reciprocal",
          "sin", "cos", "tanh", "sigmoid", "erf", "floor", "ceil", "round", "trunc", "square")
_BINARY = ("eq", "ne", "lt", "le", "gt", "ge", "remainder", "floor_divide", "maximum", "minimum",
           "atan2", "logical_and", "logical_or", "logical_xor", "pow")
for _n in _UNARY:
    DEVICE_CALLS[_n] = (lambda n: lambda t, u: getattr(t, n)())(_n)
    DEVICE_CALLS[_n + "_"] = (lambda n: lambda t, u: getattr(u, n + "_")())(_n)
for _n in _BINARY:
    DEVICE_CALLS[_n] = (lambda n: lambda t, u: getattr(t, n)(u))(_n)
    DEVICE_CALLS[_n + "_"] = (lambda n: lambda t, u: getattr(u, n + "_")(t))(_n)
for _n in ("bitwise_and", "bitwise_or", "bitwise_xor"):
    DEVICE_CALLS[_n] = (lambda n: lambda t, u: getattr(t.long(), n)(3))(_n)
    DEVICE_CALLS[_n + "_"] = (lambda n: lambda t, u: getattr(t.long(), n + "_")(3))(_n)
for _dunder, _call in {"__eq__": lambda t, u: t == u, "__ne__": lambda t, u: t != u,
                       "__lt__": lambda t, u: t < u, "__le__": lambda t, u: t <= 1,
                       "__gt__": lambda t, u: t > 0, "__ge__": lambda t, u: t >= u,
                       "__mod__": lambda t, u: t % 2, "__rmod__": lambda t, u: 7 % t,
                       "__floordiv__": lambda t, u: t // 2, "__rfloordiv__": lambda t, u: 7 // t,
                       "__and__": lambda t, u: (t > 1) & (u > 0), "__rand__": lambda t, u: True & (t > 1),
                       "__or__": lambda t, u: (t > 1) | (u > 0), "__ror__": lambda t, u: False | (t > 1),
                       "__xor__": lambda t, u: (t > 1) ^ (u > 0), "__rxor__": lambda t, u: True ^ (t > 1),
                       "__invert__": lambda t, u: ~(t > 1), "__abs__": lambda t, u: abs(t),
                       "__pow__": lambda t, u: t ** 2, "__rpow__": lambda t, u: 2 ** t,
                       "__ipow__": lambda t, u: u.__ipow__(t)}.items():
    DEVICE_CALLS[_dunder] = _call
DEVICE_CALLS.update({
    "logical_not": lambda t, u: t.logical_not(), "logical_not_": lambda t, u: (t > 1).logical_not_(),
    "bitwise_not": lambda t, u: t.long().bitwise_not(), "bitwise_not_": lambda t, u: t.long().bitwise_not_(),
    "clamp": lambda t, u: t.clamp(1, 2), "clamp_": lambda t, u: u.clamp_(max=0.5),
    "clip": lambda t, u: t.clip(min=1), "isclose": lambda t, u: t.isclose(u),
    "mm": lambda t, u: t.mm(u.t()), "bmm": lambda t, u: t[None].bmm(u.t()[None]),
    "dot": lambda t, u: t[0].dot(u[0]), "outer": lambda t, u: t[0].outer(u[0]),
    "min": lambda t, u: t.min(1), "amax": lambda t, u: t.amax(0), "amin": lambda t, u: t.amin(),
    "argmax": lambda t, u: t.argmax(), "argmin": lambda t, u: t.argmin(1), "prod": lambda t, u: t.prod(),
    "var": lambda t, u: t.var(0), "std": lambda t, u: t.std(), "norm": lambda t, u: t.norm(),
    "all": lambda t, u: t.all(), "any": lambda t, u: t.any(1), "cumsum": lambda t, u: t.cumsum(1),
    "sort": lambda t, u: t.sort(), "argsort": lambda t, u: t.argsort(0), "topk": lambda t, u: t.topk(2),
    "split": lambda t, u: t.split(2, 1), "chunk": lambda t, u: t.chunk(3, 1),
    "narrow": lambda t, u: t.narrow(1, 1, 2), "unbind": lambda t, u: t.unbind(),
    "squeeze": lambda t, u: t[None].squeeze(0), "unsqueeze": lambda t, u: t.unsqueeze(-1),
    "permute": lambda t, u: t.permute(1, 0), "movedim": lambda t, u: t.movedim(0, 1),
    "expand": lambda t, u: t[:1].expand(4, 3), "expand_as": lambda t, u: t[:1].expand_as(u),
    "flatten": lambda t, u: t.flatten(), "view_as": lambda t, u: t.view_as(u),
    "reshape_as": lambda t, u: t.reshape_as(u), "T": lambda t, u: t.T, "mT": lambda t, u: t.mT,
    "repeat": lambda t, u: t.repeat(2, 1), "roll": lambda t, u: t.roll(1, 1), "flip": lambda t, u: t.flip(0),
    "tril": lambda t, u: t.tril(), "triu": lambda t, u: t.triu(1),
    "index_select": lambda t, u: t.index_select(1, (u[0] * 0).long()),
    "gather": lambda t, u: t.gather(1, (u * 0).long()),
    "scatter_": lambda t, u: u.scatter_(1, (t * 0).long(), t),
    "masked_fill": lambda t, u: t.masked_fill(u > 0, 0.0), "masked_fill_": lambda t, u: u.masked_fill_(t > 2, 1.0),
    "where": lambda t, u: t.where(t > 2, u),
    "uniform_": lambda t, u: t.uniform_(), "normal_": lambda t, u: t.normal_(),
    "random_": lambda t, u: t.random_(10), "bernoulli_": lambda t, u: t.bernoulli_(0.5),
    "requires_grad": lambda t, u: t.requires_grad, "requires_grad_": lambda t, u: t.requires_grad_(),
    "grad": lambda t, u: t.grad, "grad_fn": lambda t, u: t.grad_fn, "is_leaf": lambda t, u: t.is_leaf,
    "backward": lambda t, u: pytest.raises(NotImplementedError, t.backward),
    "detach": lambda t, u: t.detach(), "detach_": lambda t, u: t.detach_(), "data": lambda t, u: t.data,
    "is_cpu": lambda t, u: t.is_cpu, "is_floating_point": lambda t, u: t.is_floating_point(),
    "type_as": lambda t, u: t.type_as(u.long()), "double": lambda t, u: t.double(),
    "bool": lambda t, u: t.bool(), "byte": lambda t, u: t.byte(), "char": lambda t, u: t.char(),
    "short": lambda t, u: t.short(), "new_zeros": lambda t, u: t.new_zeros(2),
    "new_ones": lambda t, u: t.new_ones((2, 2)), "new_empty": lambda t, u: t.new_empty(3),
    "new_full": lambda t, u: t.new_full((2,), 7), "new_tensor": lambda t, u: t.new_tensor([1, 2]),
    "fmod": lambda t, u: t.fmod(u), "fmod_": lambda t, u: t.fmod_(2),
    "softmax": lambda t, u: t.softmax(1), "log_softmax": lambda t, u: t.log_softmax(-1),
    "scatter_add_": lambda t, u: u.scatter_add_(1, (t * 0).long(), t),
    "scatter_add": lambda t, u: u.scatter_add(0, (t * 0).long(), t),
    "index_add_": lambda t, u: u.index_add_(0, (t[:, 0] * 0).long(), t),
    "index_add": lambda t, u: t.index_add(1, (u[0] * 0).long(), u, alpha=2),
    "addmm": lambda t, u: u[:, :2].addmm(t, u.t()), "addmm_": lambda t, u: u[:, :2].addmm_(t, u.t()),
    "baddbmm": lambda t, u: u[None, :, :2].baddbmm(t[None], u.t()[None]),
    "baddbmm_": lambda t, u: u[None, :, :2].baddbmm_(t[None], u.t()[None], beta=0),
    "relu": lambda t, u: t.relu(), "relu_": lambda t, u: t.relu_(), "cumprod": lambda t, u: t.cumprod(1),
    "logsumexp": lambda t, u: t.logsumexp(0), "isnan": lambda t, u: t.isnan(),
    "isinf": lambda t, u: t.isinf(), "isfinite": lambda t, u: t.isfinite(),
    "nan_to_num": lambda t, u: t.nan_to_num(), "nan_to_num_": lambda t, u: t.nan_to_num_(posinf=1.0),
    "diag": lambda t, u: t.diag(1), "tensor_split": lambda t, u: t.tensor_split([1], 1),
})


def test_c8_every_device_side_name_is_tested():
    assert set(DEVICE_CALLS) == _DEVICE_SIDE


@pytest.mark.parametrize("name", sorted(DEVICE_CALLS))
def test_c8_device_side_names_never_wait(ctx, name, monkeypatch):
    t = ctx.arange(6, dtype=ctx.float32).reshape(2, 3) + 1
    u = ctx.ones(2, 3)
    monkeypatch.setattr(Tensor, "_read", lambda self: pytest.fail(f"{name} read data on the host"))
    DEVICE_CALLS[name](t, u)
    assert ctx.engine.steps == 0 and ctx.engine.now_ns == 0.0
    assert not t._storage.last_write.done


def test_c8_read_in_a_rank_yields_through_ctx_wait(ctx):
    seen = {}

    def worker(rank, ctx):
        if rank == 0:
            t = ctx.ones(8) * 2
            seen["op"] = t._storage.last_write
            seen["value"] = t.sum().item()
        else:  # runs in the same round, after rank 0 blocked in its read
            seen["pending"] = [(task.rank, h) for task, h in ctx.sim.runtime.pending_waits]

    spawn(ctx, worker, 2)
    assert seen["value"] == 16.0
    [(rank, handle)] = seen["pending"]
    assert rank == 0 and handle is not seen["op"] and "sum" in handle.desc  # the sum's own op


def test_c8_read_in_a_rank_does_not_block_a_rank_with_long_device_work(ctx):
    log = []

    def worker(rank, ctx):
        if rank == 0:
            t = ctx.ones(1)
            log.append(("r0 reads", ctx.sim.now_ns()))
            t.item()
            log.append(("r0 read", ctx.sim.now_ns(), t._storage.last_write.time_ns))
        else:
            m = ctx.ones(1024, 1024)
            slow = m @ m  # ~0.2 ms of device work on cuda:1
            log.append(("r1 enqueued", ctx.sim.now_ns()))
            ctx.wait(ctx.sim.timer(1000))
            log.append(("r1 host work", ctx.sim.now_ns()))
            slow.max().item()
            log.append(("r1 read", ctx.sim.now_ns()))

    spawn(ctx, worker, 2)
    r0_done = log[3][2]
    assert log[:4] == [("r0 reads", 0.0), ("r1 enqueued", 0.0), ("r1 host work", 1000.0),
                       ("r0 read", r0_done, r0_done)]
    assert r0_done == 4000 + 4 / 1000  # launch overhead + 4 bytes at 1000 B/ns: rank 1's work ignored
    assert log[4][0] == "r1 read" and log[4][1] > 200_000


# -- creation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["float32", "float16", "int32", "int64", "bfloat16"])
def test_creation_functions_per_dtype(mctx, name):
    dt = dtype_of(mctx, name)
    np_dt = F32 if name == "bfloat16" else NP_DTYPES[name]
    as_np = (lambda t: t.float().numpy()) if name == "bfloat16" else (lambda t: t.numpy())
    for t, expected in [
        (mctx.zeros(2, 3, dtype=dt), np.zeros((2, 3))),
        (mctx.ones((4,), dtype=dt), np.ones(4)),
        (mctx.empty([2, 2], dtype=dt), np.zeros((2, 2))),
        (mctx.full((2,), 7, dtype=dt), np.full(2, 7)),
        (mctx.arange(5, dtype=dt), np.arange(5)),
        (mctx.tensor([[1, 2], [3, 4]], dtype=dt), np.array([[1, 2], [3, 4]])),
    ]:
        assert t.dtype is dt
        got = as_np(t)
        assert got.shape == expected.shape and (got == expected.astype(np_dt)).all()


def test_creation_infers_dtypes_as_torch(mctx):
    assert mctx.tensor([1, 2]).dtype is mctx.int64
    assert mctx.tensor([1, 2.5]).dtype is mctx.float32
    assert mctx.tensor(3.0).shape == ()
    assert mctx.full((2,), 3).dtype is mctx.int64 and mctx.full((2,), 3.0).dtype is mctx.float32
    assert mctx.arange(3).dtype is mctx.int64 and mctx.arange(0, 1, 0.25).dtype is mctx.float32
    assert mctx.zeros(2).dtype is mctx.float32
    for name in ("float32", "float16", "int32", "int64"):
        a = sample((3,), NP_DTYPES[name])
        assert mctx.tensor(a).dtype is dtype_of(mctx, name)
        assert mctx.from_numpy(a).dtype is dtype_of(mctx, name)
    assert (mctx.float, mctx.half, mctx.int, mctx.long) == (mctx.float32, mctx.float16, mctx.int32, mctx.int64)


def test_arange_matches_numpy(mctx):
    assert mctx.arange(2, 11, 3).tolist() == [2, 5, 8]
    assert mctx.arange(5, 0, -2).tolist() == [5, 3, 1]
    np.testing.assert_array_equal(mctx.arange(0, 1, 0.1).numpy(), np.arange(0, 1, 0.1).astype(F32))
    with pytest.raises(RuntimeError, match="step must be nonzero"):
        mctx.arange(0, 5, 0)
    with pytest.raises(RuntimeError, match="inconsistent with step sign"):
        mctx.arange(0, 5, -1)


def test_from_numpy_and_tensor_copy_the_host_data(mctx):
    a = np.arange(4, dtype=F32)
    t, u = mctx.from_numpy(a), mctx.tensor(a)
    a[:] = -1
    assert t.tolist() == [0, 1, 2, 3] and u.tolist() == [0, 1, 2, 3]
    out = t.numpy()
    out[:] = 99  # numpy() is a copy: the device memory is untouched
    assert t.tolist() == [0, 1, 2, 3]


def test_tensor_of_a_tensor_is_a_device_copy(mctx):
    src = mctx.arange(3, dtype=mctx.int32)
    t = mctx.tensor(src)
    assert t.dtype is mctx.int32 and t._storage is not src._storage and t.tolist() == [0, 1, 2]
    assert mctx.tensor(src, dtype=mctx.float16).dtype is mctx.float16


def test_creation_errors_name_the_bad_input(mctx):
    with pytest.raises(RuntimeError, match="negative dimension -1"):
        mctx.zeros(2, -1)
    with pytest.raises(TypeError, match="size must be ints"):
        mctx.ones(2.5)
    with pytest.raises(TypeError, match="dtype must be a coopsim dtype"):
        mctx.zeros(2, dtype=np.float32)
    with pytest.raises(TypeError, match="numpy dtype complex128 is not supported"):
        mctx.from_numpy(np.zeros(2, dtype=complex))
    with pytest.raises(TypeError, match="expected np.ndarray"):
        mctx.from_numpy([1, 2])
    with pytest.raises(TypeError, match="give bools, ints or floats"):
        mctx.tensor(["a", "b"])
    with pytest.raises(ValueError, match="cannot make a tensor"):
        mctx.tensor([[1, 2], [3]])
    with pytest.raises(RuntimeError, match="device cuda:7 does not exist: topology 'small' has 4"):
        mctx.zeros(2, device="cuda:7")
    assert mctx.zeros(2, device="cpu").is_cpu  # the host holds tensors (docs/adr/0016)
    with pytest.raises(RuntimeError, match="'cpu' holds none"):
        mctx.cuda.set_device("cpu")
    with pytest.raises(RuntimeError, match="without overflow"):
        mctx.full((2,), 2**40, dtype=mctx.int32)
    with pytest.raises(RuntimeError, match="without overflow"):
        mctx.full((2,), 1e6, dtype=mctx.float16)
    with pytest.raises(TypeError, match="created by the context"):
        Tensor([1, 2])


def test_creation_on_a_named_device_and_in_ranks(ctx):
    assert str(ctx.zeros(1, device=2).device) == "cuda:2"
    assert ctx.zeros(1, device=ctx.device("cuda", 3)).device == ctx.device("cuda:3")
    assert repr(ctx.zeros(1).device) == "device(type='cuda', index=0)"
    devices = {}

    def worker(rank, ctx):
        devices[rank] = str(ctx.ones(1).device)

    spawn(ctx, worker, 3)
    assert devices == {0: "cuda:0", 1: "cuda:1", 2: "cuda:2"}


# -- metadata and views -------------------------------------------------------------------------

def test_metadata_as_torch(mctx):
    t = mctx.zeros(2, 3, 4, dtype=mctx.float16)
    assert t.shape == (2, 3, 4) and isinstance(t.shape, tuple)
    assert (t.numel(), t.dim(), t.ndim, t.element_size()) == (24, 3, 3, 2)
    assert t.size() == (2, 3, 4) and t.size(-1) == 4 and t.stride() == (12, 4, 1) and t.stride(0) == 12
    assert t.is_contiguous() and not t.transpose(0, 2).is_contiguous()
    assert len(t) == 2 and t.is_cuda
    assert mctx.zeros(3, dtype=mctx.bfloat16).element_size() == 2
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of \[-3, 2\], but got 3\)"):
        t.size(3)
    with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
        len(mctx.tensor(1.0))


def test_indexing_returns_views_of_the_same_storage(mctx):
    base = mctx.arange(12, dtype=mctx.float32).reshape(3, 4)
    row, col, elem, strided = base[1], base[:, 2], base[2, 3], base[::2, 1::2]
    for v in (row, col, elem, strided, base[None, ..., 0]):
        assert v._storage is base._storage
    assert row.tolist() == [4, 5, 6, 7] and col.tolist() == [2, 6, 10] and elem.item() == 11
    assert elem.shape == () and strided.tolist() == [[1, 3], [9, 11]]
    assert row.storage_offset() == 4 and elem.storage_offset() == 11 and col.stride() == (4,)
    row.mul_(10)  # writes through the view into base's storage
    assert base.tolist()[1] == [40, 50, 60, 70]
    base[0, :2] = mctx.tensor([-1.0, -2.0])
    base[2] = 0
    assert base.tolist() == [[-1, -2, 2, 3], [40, 50, 60, 70], [0, 0, 0, 0]]


def test_indexing_errors_as_torch(mctx):
    t = mctx.zeros(3)
    with pytest.raises(ValueError, match="step must be greater than zero"):
        t[::-1]
    with pytest.raises(IndexError, match="index 3 is out of bounds"):
        t[[0, 3]]  # a host-known index is checked at the call
    with pytest.raises(IndexError, match="must be long, int, byte or bool"):
        t[t]
    with pytest.raises(IndexError, match="invalid index of a 0-dim tensor"):
        t[0][0]
    with pytest.raises(IndexError):
        t[5]


def test_view_shares_storage_and_refuses_non_contiguous(mctx):
    t = mctx.arange(6)
    v = t.view(2, -1)
    assert v._storage is t._storage and v.shape == (2, 3)
    assert t.view((3, 2)).shape == (3, 2) and t.reshape(-1, 1).shape == (6, 1)
    nc = v.t()
    with pytest.raises(RuntimeError, match=r"view size is not compatible .* Use .reshape\(...\) instead"):
        nc.view(6)
    r = nc.reshape(6)  # a copy, as torch
    assert r._storage is not t._storage and r.tolist() == [0, 3, 1, 4, 2, 5]
    with pytest.raises(RuntimeError, match=r"shape '\[4, 2\]' is invalid for input of size 6"):
        t.view(4, 2)
    with pytest.raises(RuntimeError, match="only one dimension can be inferred"):
        t.view(-1, -1)


def test_transpose_and_t_are_views(mctx):
    m = mctx.arange(6).view(2, 3)
    assert m.t().tolist() == [[0, 3], [1, 4], [2, 5]] and m.t()._storage is m._storage
    assert m.transpose(-1, 0).tolist() == m.t().tolist()
    with pytest.raises(RuntimeError, match="t\\(\\) expects a tensor with <= 2 dimensions"):
        mctx.zeros(2, 2, 2).t()


# -- elementwise ops ------------------------------------------------------------------------------

BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide}


def ref_binary(op, x, y, result_np, compute_np):
    """torch semantics in numpy: cast the operands to the compute type, apply, cast."""
    cx = x.astype(compute_np) if isinstance(x, np.ndarray) else compute_np(x)
    cy = y.astype(compute_np) if isinstance(y, np.ndarray) else compute_np(y)
    with np.errstate(all="ignore"):
        return np.asarray(BINARY[op](cx, cy)).astype(result_np)


def _result_and_compute(op, name):
    if op == "div" and name in ("int32", "int64"):
        return F32, F32
    return NP_DTYPES[name], (F32 if name == "float16" else NP_DTYPES[name])


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("name", sorted(NP_DTYPES))
def test_binary_ops_match_numpy_per_dtype(mctx, op, name):
    np_dt = NP_DTYPES[name]
    a, b = sample((3, 4), np_dt, 1), sample((3, 4), np_dt, 2, nonzero=True)
    result, compute = _result_and_compute(op, name)
    x, y = mctx.tensor(a), mctx.tensor(b)
    s = 3 if name.startswith("int") else 0.1
    cases = [
        (getattr(x, op)(y), ref_binary(op, a, b, result, compute)),
        (getattr(x, op)(s), ref_binary(op, a, s, result, compute)),
        ({"add": x + y, "sub": x - y, "mul": x * y, "div": x / y}[op], ref_binary(op, a, b, result, compute)),
        ({"add": s + y, "sub": s - y, "mul": s * y, "div": s / y}[op], ref_binary(op, s, b, result, compute)),
    ]
    for got, expected in cases:
        assert got.dtype.itemsize == np.dtype(result).itemsize and got.shape == expected.shape
        np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("name", sorted(NP_DTYPES))
def test_inplace_ops_match_numpy_per_dtype(mctx, op, name):
    np_dt = NP_DTYPES[name]
    a, b = sample((2, 3), np_dt, 3), sample((3,), np_dt, 4, nonzero=True)
    x = mctx.tensor(a)
    if op == "div" and name.startswith("int"):
        with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type"):
            x.div_(mctx.tensor(b))
        return
    _, compute = _result_and_compute(op, name)
    returned = getattr(x, op + "_")(mctx.tensor(b))  # broadcast b over x's rows
    assert returned is x
    np.testing.assert_array_equal(x.numpy(), ref_binary(op, a, b, np_dt, compute))


@settings(max_examples=25, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4),
       name=st.sampled_from(sorted(NP_DTYPES)), op=st.sampled_from(sorted(BINARY)),
       seed=st.integers(0, 2**16))
def test_binary_ops_broadcast_like_numpy(mctx, shapes, name, op, seed):
    (sa, sb), out_shape = shapes.input_shapes, shapes.result_shape
    np_dt = NP_DTYPES[name]
    a, b = sample(sa, np_dt, seed), sample(sb, np_dt, seed + 1, nonzero=True)
    result, compute = _result_and_compute(op, name)
    got = getattr(mctx.tensor(a), op)(mctx.tensor(b))
    assert got.shape == tuple(out_shape)
    np.testing.assert_array_equal(got.numpy(), ref_binary(op, a, b, result, compute))


PROMOTIONS = [  # (left, right, expected): a name is a 1-D tensor, "0d:<name>" a 0-d tensor
    ("int32", "int64", "int64"), ("int32", 2, "int32"), ("int64", 2, "int64"),
    ("int32", 2.5, "float32"), ("int64", "float16", "float16"), ("float16", "float32", "float32"),
    ("float16", 2.5, "float16"), ("bfloat16", 2.5, "bfloat16"), ("bfloat16", "float16", "float32"),
    ("int64", "bfloat16", "bfloat16"), ("int32", "0d:int64", "int32"), ("float16", "0d:float32", "float16"),
    ("int32", "0d:float16", "float16"), ("0d:int32", 2.5, "float32"), ("0d:int32", "0d:int64", "int64"),
]


@pytest.mark.parametrize("left,right,expected", PROMOTIONS)
def test_type_promotion_as_torch(mctx, left, right, expected):
    def make(v):
        if not isinstance(v, str):
            return v
        zero_d = v.startswith("0d:")
        dt = dtype_of(mctx, v.removeprefix("0d:"))
        return mctx.ones((), dtype=dt) if zero_d else mctx.ones(2, dtype=dt)

    x, y = make(left), make(right)
    assert (x + y).dtype is dtype_of(mctx, expected)
    assert (y * x).dtype is dtype_of(mctx, expected)


def test_integer_true_division_is_float32_and_integer_overflow_wraps(mctx):
    q = mctx.tensor([7, -7], dtype=mctx.int32) / 2
    assert q.dtype is mctx.float32 and q.tolist() == [3.5, -3.5]
    assert (mctx.tensor([1], dtype=mctx.int32) / 0).tolist() == [float("inf")]
    big = mctx.tensor([2**31 - 1], dtype=mctx.int32)
    assert (big + 1).tolist() == [-(2**31)]  # numpy's two's-complement wraparound, stated in ADR-0005
    assert (mctx.tensor([2**62], dtype=mctx.int64) * 4).tolist() == [0]
    with pytest.raises(RuntimeError, match="cannot be converted to type int32 without overflow"):
        big + 2**40


def test_inplace_int_from_int64_wraps_and_float16_rounds(mctx):
    x = mctx.tensor([2**31 - 1], dtype=mctx.int32)
    x.add_(mctx.tensor([1], dtype=mctx.int64))
    assert x.tolist() == [-(2**31)]
    h = mctx.tensor([1.0], dtype=mctx.float16)
    h += mctx.tensor([1e-4], dtype=mctx.float32)  # computed in float32, rounded to float16
    assert h.tolist() == [float(np.float16(np.float32(1.0) + np.float32(1e-4)))]


def test_add_and_sub_alpha(mctx):
    x, y = mctx.tensor([1.0, 2.0]), mctx.tensor([10.0, 20.0])
    assert x.add(y, alpha=2).tolist() == [21, 42] and x.sub(y, alpha=0.5).tolist() == [-4, -8]
    x.add_(y, alpha=-1)
    assert x.tolist() == [-9, -18]
    with pytest.raises(RuntimeError, match="alpha must not be a floating point"):
        mctx.tensor([1]).add(mctx.tensor([1]), alpha=0.5)


def test_neg(mctx):
    assert (-mctx.tensor([1.5, -2.0])).tolist() == [-1.5, 2.0]
    assert (-mctx.tensor([3], dtype=mctx.int32)).tolist() == [-3]


def test_elementwise_errors_as_torch(mctx):
    x = mctx.ones(2, 3)
    with pytest.raises(RuntimeError, match="The size of tensor a \\(3\\) must match the size of tensor b \\(4\\) at non-singleton dimension 1"):
        x + mctx.ones(2, 4)
    with pytest.raises(RuntimeError, match="output with shape \\[3\\] doesn't match the broadcast shape \\[2, 3\\]"):
        mctx.ones(3).add_(x)
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cuda:1!"):
        x + mctx.ones(2, 3, device=1)
    with pytest.raises(RuntimeError, match="refer to a single memory location"):
        y = mctx.arange(4)
        y[1:].add_(y[:-1])
    with pytest.raises(TypeError, match="unsupported operand"):
        x + "a"
    with pytest.raises(TypeError):
        np.ones(3) + mctx.ones(3)  # numpy defers to the tensor, which refuses arrays
    with pytest.raises(TypeError, match="expected a Tensor or a Python number, got list"):
        x.mul([1, 2, 3])


# -- reductions ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(NP_DTYPES) + ["bfloat16"])
def test_reductions_match_numpy_per_dtype(mctx, name):
    np_dt = F32 if name == "bfloat16" else NP_DTYPES[name]
    a = sample((3, 4, 5), np_dt, 5)
    if name == "bfloat16":
        round_bfloat16(a)
    t = mctx.tensor(a, dtype=dtype_of(mctx, name))
    as_np = (lambda r: r.float().numpy()) if name == "bfloat16" else (lambda r: r.numpy())
    floating = a.dtype.kind == "f"
    acc = F32 if floating else I64
    for dim, keepdim in [(None, False), (1, False), (-1, True), ((0, 2), False), ([0, 1, 2], True)]:
        axis = None if dim is None else (tuple(dim) if isinstance(dim, list) else dim)
        expected = np.sum(a, axis=axis, dtype=acc, keepdims=keepdim)
        s = t.sum(dim, keepdim)
        assert s.dtype is (t.dtype if floating else mctx.int64)
        np.testing.assert_allclose(as_np(s), expected.astype(np_dt) if floating else expected, rtol=1e-2 if name in ("float16", "bfloat16") else 1e-6)
        if floating:
            mean = (np.sum(a, axis=axis, dtype=F32, keepdims=keepdim) / np.float32(a.size / np.asarray(expected).size))
            np.testing.assert_allclose(as_np(t.mean(dim, keepdim)), mean.astype(np_dt), rtol=1e-2 if name != "float32" else 1e-6)
    assert t.max().item() == a.max()
    values, indices = t.max(1)
    np.testing.assert_array_equal(as_np(values), a.max(1))
    np.testing.assert_array_equal(indices.numpy(), a.argmax(1))
    assert indices.dtype is mctx.int64
    assert t.max(dim=-1, keepdim=True).values.shape == (3, 4, 1)


def test_float16_sum_accumulates_in_float32(mctx):
    a = np.full(4096, 1.0, dtype=F16)  # a float16 running sum would stall at 2048
    assert mctx.tensor(a).sum().item() == 4096.0


def test_reduction_errors_and_edge_cases_as_torch(mctx):
    with pytest.raises(RuntimeError, match="mean\\(\\): could not infer output dtype.*Got: Long"):
        mctx.arange(3).mean()
    with pytest.raises(RuntimeError, match="Expected reduction dim to be specified for input.numel\\(\\) == 0"):
        mctx.zeros(0).max()
    with pytest.raises(IndexError, match="Expected reduction dim 1 to have non-zero size"):
        mctx.zeros(2, 0).max(1)
    with pytest.raises(RuntimeError, match="dim 0 appears multiple times"):
        mctx.zeros(2, 2).sum((0, -2))
    assert mctx.zeros(0).sum().item() == 0.0
    assert np.isnan(mctx.zeros(0).mean().item())
    z = mctx.tensor(5.0)
    assert z.sum(0).item() == 5.0 and z.max(0).values.item() == 5.0 and z.max(0).indices.item() == 0


# -- matmul ------------------------------------------------------------------------------------------

MATMUL_SHAPES = [((4,), (4,)), ((2, 3), (3, 5)), ((2, 3), (3,)), ((3,), (3, 2)),
                 ((2, 1, 3, 4), (5, 4, 2)), ((4, 3), (2, 3, 2))]


@pytest.mark.parametrize("name", sorted(NP_DTYPES) + ["bfloat16"])
def test_matmul_matches_numpy_per_dtype(mctx, name):
    np_dt = F32 if name == "bfloat16" else NP_DTYPES[name]
    dt = dtype_of(mctx, name)
    for i, (sa, sb) in enumerate(MATMUL_SHAPES):
        a, b = sample(sa, np_dt, 10 + i), sample(sb, np_dt, 20 + i)
        if name == "bfloat16":
            round_bfloat16(a)
            round_bfloat16(b)
        compute = F32 if a.dtype.kind == "f" else np_dt
        expected = np.matmul(a.astype(compute), b.astype(compute))
        if name == "bfloat16":
            expected = np.asarray(expected, F32)
            round_bfloat16(expected)
        got = mctx.tensor(a, dtype=dt) @ mctx.tensor(b, dtype=dt)
        assert got.dtype is dt
        as_np = got.float().numpy() if name == "bfloat16" else got.numpy()
        np.testing.assert_array_equal(as_np, np.asarray(expected).astype(np_dt))


def test_matmul_errors_as_torch(mctx):
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied \\(2x3 and 4x5\\)"):
        mctx.ones(2, 3) @ mctx.ones(4, 5)
    with pytest.raises(RuntimeError, match="both arguments to matmul need to be at least 1D, but they are 0D and 1D"):
        mctx.tensor(1.0).matmul(mctx.ones(2))
    with pytest.raises(RuntimeError, match="inconsistent tensor size"):
        mctx.ones(3) @ mctx.ones(4)
    with pytest.raises(RuntimeError, match="expected m1 and m2 to have the same dtype"):
        mctx.ones(2, 2) @ mctx.ones(2, 2, dtype=mctx.int32)
    with pytest.raises(TypeError):
        mctx.ones(2, 2) @ 2


# -- copy_, clone, fill_, zero_, to -----------------------------------------------------------------

@pytest.mark.parametrize("src_name", sorted(NP_DTYPES))
@pytest.mark.parametrize("dst_name", sorted(NP_DTYPES))
def test_copy_casts_like_numpy(mctx, src_name, dst_name):
    a = sample((2, 3), NP_DTYPES[src_name], 7)
    dst = mctx.zeros(2, 3, dtype=dtype_of(mctx, dst_name))
    assert dst.copy_(mctx.tensor(a)) is dst
    np.testing.assert_array_equal(dst.numpy(), a.astype(NP_DTYPES[dst_name]))
    assert mctx.tensor(a).to(dtype_of(mctx, dst_name)).tolist() == a.astype(NP_DTYPES[dst_name]).tolist()


def test_copy_broadcasts_and_clone_is_a_contiguous_copy(mctx):
    dst = mctx.zeros(2, 3)
    dst.copy_(mctx.tensor([1.0, 2.0, 3.0]))
    assert dst.tolist() == [[1, 2, 3], [1, 2, 3]]
    with pytest.raises(RuntimeError, match="cannot be broadcast to the destination's shape \\[2, 3\\]"):
        dst.copy_(mctx.ones(2))
    with pytest.raises(TypeError, match="expected a Tensor as src"):
        dst.copy_([1, 2, 3])
    c = dst.t().clone()
    assert c.is_contiguous() and c._storage is not dst._storage and c.tolist() == [[1, 1], [2, 2], [3, 3]]
    c.fill_(0)
    assert dst.sum().item() == 12  # the clone does not share memory


def test_fill_and_zero(mctx):
    t = mctx.ones(3, dtype=mctx.int32)
    assert t.fill_(2.7).tolist() == [2, 2, 2]  # truncation, as torch
    assert t.zero_().tolist() == [0, 0, 0]
    t.fill_(mctx.tensor(9))
    assert t.tolist() == [9, 9, 9]
    with pytest.raises(RuntimeError, match="fill_ only supports 0-dimension value tensor"):
        t.fill_(mctx.ones(3))
    with pytest.raises(RuntimeError, match="without overflow"):
        t.fill_(2**40)


def test_to_same_dtype_is_self_and_other_device_refused(mctx):
    t = mctx.ones(2)
    assert t.to(mctx.float32) is t and t.to("cuda:0") is t and t.cuda() is t
    assert t.to(mctx.float32, copy=True) is not t
    assert t.to("cuda", mctx.float16).dtype is mctx.float16
    assert t.to(mctx.ones(1, dtype=mctx.int64)).dtype is mctx.int64
    assert (t.float().dtype, t.half().dtype, t.int().dtype, t.long().dtype) == (mctx.float32, mctx.float16, mctx.int32, mctx.int64)
    with pytest.raises(RuntimeError, match="transfer between devices"):
        t.to("cuda:1")


# -- bfloat16 ----------------------------------------------------------------------------------------

def _bfloat16_reference(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (8 significant bits, ties to even) in float64 arithmetic."""
    x64 = x.astype(np.float64)
    out = np.empty_like(x64)
    for i, v in enumerate(x64):
        if not np.isfinite(v) or v == 0:
            out[i] = v
            continue
        e = max(int(np.floor(np.log2(abs(v)))), -126)
        ulp = 2.0 ** (e - 7)
        out[i] = np.round(v / ulp) * ulp  # np.round: half to even
    with np.errstate(over="ignore"):
        return out.astype(F32)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(F32, st.integers(1, 16), elements=st.floats(width=32, allow_nan=False)))
def test_bfloat16_rounding_matches_a_reference(x):
    got = x.copy()
    round_bfloat16(got)
    np.testing.assert_array_equal(got, _bfloat16_reference(x))
    assert not (got.view(np.uint32) & 0xFFFF).any()


def test_bfloat16_rounding_ties_to_even_and_specials():
    one = 1.0
    x = np.array([one + 2**-8, one + 3 * 2**-8, -(one + 2**-8), np.inf, -np.inf, np.nan,
                  np.float32(3.4e38)], F32)
    nan_payload = np.array([0x7FFFFFFF], np.uint32).view(F32)
    x = np.concatenate([x, nan_payload])
    round_bfloat16(x)
    assert x[:5].tolist() == [1.0, 1.0 + 2**-6, -1.0, np.inf, -np.inf]
    assert np.isnan(x[5]) and x[6] == np.inf and np.isnan(x[7])


def test_bfloat16_is_honest_values_sizes_and_numpy_refusal(mctx):
    t = mctx.tensor([1.0, 1.0 + 2**-8, 3.0], dtype=mctx.bfloat16)
    assert t.tolist() == [1.0, 1.0, 3.0]  # rounded on creation
    r = t * (1 + 2**-7)
    # 3 * (1 + 2**-7) = 3.0234375 lies halfway between bfloat16 neighbours 3.015625 and 3.03125:
    # ties to even (mantissa ...194, not ...193)
    assert r.dtype is mctx.bfloat16 and r.tolist() == [1.0078125, 1.0078125, 3.03125]
    assert (t / 3).tolist() == [float(np.float32(_bfloat16_reference(np.array([1 / 3], F32))[0]))] * 2 + [1.0]
    with pytest.raises(TypeError, match="Got unsupported ScalarType BFloat16"):
        t.numpy()
    before = mctx.cuda.memory_allocated()
    big = mctx.zeros(1000, dtype=mctx.bfloat16)
    assert mctx.cuda.memory_allocated() - before == 2000
    del big


# -- memory ------------------------------------------------------------------------------------------

def test_storage_memory_is_accounted_and_freed_with_its_last_tensor(ctx):
    dev = ctx.sim.runtime.devices[0]
    t = ctx.zeros(1000)
    view = t[10:20]
    assert dev.allocated_bytes == 4000
    del t
    gc.collect()
    assert dev.allocated_bytes == 4000  # the view keeps the storage alive
    del view
    gc.collect()
    assert dev.allocated_bytes == 0


def test_allocation_beyond_device_memory_raises_out_of_memory(ctx):
    with pytest.raises(OutOfMemoryError, match="CUDA out of memory. Tried to allocate 20.00 GiB"):
        ctx.empty(5 * 2**30)  # 20 GiB of float32 on a 16 GiB device
    assert ctx.sim.runtime.devices[0].allocated_bytes == 0


# -- object protocol ---------------------------------------------------------------------------------

def test_comparison_is_a_bool_tensor_pickling_refused_deepcopy_clones(mctx):
    t = mctx.ones(2)
    eq = t == t
    assert eq.dtype is mctx.bool and eq.tolist() == [True, True]
    with pytest.raises(TypeError, match="cannot be pickled"):
        copy.copy(t)
    d = copy.deepcopy(t)
    assert d._storage is not t._storage and d.tolist() == [1.0, 1.0]
    assert {t: 1}[t] == 1  # identity hash
    assert pickle.loads(pickle.dumps(mctx.float16)) is mctx.float16
    with pytest.raises(AttributeError, match="immutable"):
        mctx.float32.itemsize = 8


# -- C9 ----------------------------------------------------------------------------------------------

def _program(rank, ctx, out):
    x = ctx.arange(256, dtype=ctx.float32).view(16, 16) * (rank + 1)
    y = (x @ x.t()).mean(1) / 3 - x.sum()
    h = x.half() * 0.1
    out[rank] = (y.tolist(), h.float().sum().item(), ctx.sim.now_ns(),
                 y._storage.last_write.time_ns, ctx.sim.runtime.devices[rank].stream.last.time_ns)


def test_c9_same_program_twice_same_values_and_virtual_times():
    runs = []
    for _ in range(2):
        out = {}
        with make_ctx() as ctx:
            ctx.multiprocessing.spawn(_program, args=(ctx, out), nprocs=4)
            runs.append((out, ctx.engine.now_ns))
    assert runs[0] == runs[1]
    assert runs[0][0][0][2] > 0


def test_c8_read_only_view_waits_for_the_writer_and_copies_nothing(ctx):
    from coopsim.tensor.host import read_only_view
    t = ctx.ones(4) * 6
    op = t._storage.last_write
    assert not op.done
    view = read_only_view(t[1:])
    assert op.done and ctx.engine.now_ns == op.time_ns  # waited for exactly that op
    assert view.tolist() == [6.0] * 3 and np.shares_memory(view, t._array)
    with pytest.raises(ValueError, match="read-only"):
        view[0] = 1.0
    with RuntimeContext(timing_only=True) as hollow, pytest.raises(RuntimeError, match="timing-only"):
        read_only_view(hollow.ones(4))
