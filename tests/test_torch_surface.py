"""The torch surface (issue 10, docs/adr/0016-torch-surface.md): each name exists and does
what PyTorch does on a small example, values compared with numpy."""

import math

import numpy as np
import pytest

import coopsim

A = np.array([[1.5, -2.0, 3.0], [0.25, 4.0, -1.0]], dtype=np.float32)
B = np.array([[2.0, 1.0, -3.0], [0.5, -4.0, 2.0]], dtype=np.float32)
POS = np.abs(A) + 0.5


@pytest.fixture(scope="module")
def torch():
    with coopsim.RuntimeContext() as ctx:
        yield ctx


def close(t, expected, rtol=1e-5, atol=1e-6):
    got = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
    np.testing.assert_allclose(got, np.asarray(expected), rtol=rtol, atol=atol)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# -- dtypes and promotion ---------------------------------------------------------------------

PROMOTIONS = [  # torch.promote_types (c10/core/ScalarType.h)
    ("uint8", "int8", "int16"), ("bool", "uint8", "uint8"), ("int16", "int32", "int32"),
    ("bool", "float16", "float16"), ("float16", "bfloat16", "float32"), ("float32", "float64", "float64"),
    ("int64", "float64", "float64"), ("uint8", "int16", "int16"), ("int8", "bool", "int8"),
]


@pytest.mark.parametrize("a,b,expected", PROMOTIONS)
def test_promote_types_as_torch(torch, a, b, expected):
    x = torch.ones(2, dtype=getattr(torch, a))
    y = torch.ones(2, dtype=getattr(torch, b))
    assert torch.promote_types(getattr(torch, a), getattr(torch, b)) is getattr(torch, expected)
    assert (x + y).dtype is getattr(torch, expected)


def test_scalars_and_zero_dim_tensors_promote_as_torch(torch):
    u8 = torch.ones(2, dtype=torch.uint8)
    assert (u8 + 1).dtype is torch.uint8  # a Python int does not widen an int tensor
    assert (u8 + 1.5).dtype is torch.float32  # a Python float gives the default dtype
    assert (torch.ones(2, dtype=torch.bool) + 1).dtype is torch.int64
    assert (torch.ones(2, dtype=torch.int32) + torch.tensor(1.0, dtype=torch.float64)).dtype is torch.float64
    assert (torch.ones(2, dtype=torch.float16) + torch.tensor(1.0, dtype=torch.float64)).dtype is torch.float16
    assert torch.result_type(torch.ones(2, dtype=torch.int8), 2.0) is torch.float32


def test_float64_is_kept_from_numpy_and_default_dtype(torch):
    assert torch.tensor(np.zeros(2)).dtype is torch.float64
    assert torch.from_numpy(np.arange(3.0)).dtype is torch.float64
    assert torch.as_tensor(np.float64(2.5)).dtype is torch.float64
    assert torch.tensor([True, False]).dtype is torch.bool
    assert torch.tensor([1.0]).dtype is torch.float32
    x = torch.tensor([1.0, 2.0], dtype=torch.double)
    close(x * x / 3, np.array([1.0, 4.0]) / 3, rtol=1e-15)
    assert (x / 3).numpy().dtype == np.float64
    assert torch.get_default_dtype() is torch.float32
    torch.set_default_dtype(torch.float64)
    try:
        assert torch.tensor([1.5]).dtype is torch.float64 and torch.zeros(1).dtype is torch.float64
        assert (torch.tensor([1, 2]) / 2).dtype is torch.float64
    finally:
        torch.set_default_dtype(torch.float32)
    with pytest.raises(TypeError, match="only floating-point"):
        torch.set_default_dtype(torch.int32)


def test_finfo_iinfo(torch):
    assert torch.finfo(torch.float32).eps == float(np.finfo(np.float32).eps)
    assert torch.finfo(torch.bfloat16).eps == 2 ** -7 and torch.finfo().max == float(np.finfo(np.float32).max)
    assert torch.iinfo(torch.int8).min == -128 and torch.iinfo(torch.uint8).max == 255
    with pytest.raises(TypeError):
        torch.iinfo(torch.float32)


# -- comparisons, masks, pow, integer-array indexing ---------------------------------------------

@pytest.mark.parametrize("op,ref", [("__eq__", np.equal), ("__ne__", np.not_equal), ("__lt__", np.less),
                                    ("__le__", np.less_equal), ("__gt__", np.greater), ("__ge__", np.greater_equal)])
def test_comparisons_return_bool_tensors(torch, op, ref):
    a, b = torch.tensor(A), torch.tensor(B)
    r = getattr(a, op)(b)
    assert r.dtype is torch.bool
    np.testing.assert_array_equal(r.numpy(), ref(A, B))
    np.testing.assert_array_equal(getattr(a, op)(1.0).numpy(), ref(A, 1.0))
    name = op.strip("_")
    np.testing.assert_array_equal(getattr(torch, name)(a, b).numpy(), ref(A, B))


def test_pow_and_operators(torch):
    a = torch.tensor(A)
    close(a ** 2, A ** 2)
    close(2 ** a, 2.0 ** A)
    close(torch.tensor(POS).pow(0.5), np.sqrt(POS))
    i = torch.tensor([2, 3, -4])
    assert (i ** 2).tolist() == [4, 9, 16] and (i ** 2).dtype is torch.int64
    assert (i % 3).tolist() == [2, 0, 2] and (i // 3).tolist() == [0, 1, -2]  # floor semantics, as torch
    assert torch.tensor([1, -1, 2]).pow(torch.tensor([-1, -3, -2])).tolist() == [1, -1, 0]
    with pytest.raises(RuntimeError, match="negative integer powers"):
        i ** -1
    m = a > 0
    assert (~m).tolist() == (~(A > 0)).tolist() and (m & (a < 3)).tolist() == ((A > 0) & (A < 3)).tolist()
    assert (m | False).tolist() == m.tolist() and (m ^ m).any().item() is False
    with pytest.raises(RuntimeError, match="Subtraction"):
        m - m
    with pytest.raises(RuntimeError, match="Negation"):
        -m


def test_mask_and_integer_array_indexing_read_and_write(torch):
    a = torch.tensor(A)
    close(a[a > 0], A[A > 0])
    close(a[[1, 0]], A[[1, 0]])
    close(a[torch.tensor([1, 1, 0])], A[[1, 1, 0]])
    close(a[:, torch.tensor([2, 0])], A[:, [2, 0]])
    close(a[torch.tensor([0, 1]), torch.tensor([2, 1])], A[[0, 1], [2, 1]])
    w = torch.tensor(A)
    w[w < 0] = 0.0
    close(w, np.where(A < 0, 0, A))
    w[torch.tensor([0])] = torch.tensor([7.0, 8.0, 9.0])
    expected = np.where(A < 0, 0, A)
    expected[0] = [7, 8, 9]
    close(w, expected)
    w[w > 7] = torch.tensor([1.0, 2.0])
    expected[expected > 7] = [1, 2]
    close(w, expected)
    bad = a[torch.tensor([5])]  # out of range: a device-side error, raised by the next host read
    with pytest.raises(RuntimeError, match="device-side assert"):
        bad.tolist()


# -- math, matmul family, reductions -----------------------------------------------------------

UNARY = {"abs": np.abs, "neg": np.negative, "exp": np.exp, "sin": np.sin, "cos": np.cos,
         "tanh": np.tanh, "sigmoid": _sigmoid, "floor": np.floor, "ceil": np.ceil, "sign": np.sign,
         "square": np.square, "trunc": np.trunc}
POSITIVE = {"log": np.log, "sqrt": np.sqrt, "rsqrt": lambda x: 1 / np.sqrt(x), "log2": np.log2,
            "reciprocal": lambda x: 1 / x, "log1p": np.log1p}


@pytest.mark.parametrize("name", sorted(UNARY) + sorted(POSITIVE))
def test_unary_math_matches_numpy(torch, name):
    data = POS if name in POSITIVE else A
    ref = {**UNARY, **POSITIVE}[name]
    close(getattr(torch, name)(torch.tensor(data)), ref(data))
    close(getattr(torch.tensor(data), name)(), ref(data))
    t = torch.tensor(data)
    getattr(t, name + "_")()
    close(t, ref(data))


def test_integer_input_to_a_float_function_gives_the_default_dtype(torch):
    r = torch.exp(torch.tensor([0, 1]))
    assert r.dtype is torch.float32
    close(r, np.exp([0.0, 1.0]))
    assert torch.abs(torch.tensor([-3])).dtype is torch.int64


def test_clamp_and_erf(torch):
    a = torch.tensor(A)
    close(a.clamp(-1, 2), np.clip(A, -1, 2))
    close(torch.clamp(a, min=0), np.maximum(A, 0))
    close(a.clip(max=torch.tensor(B)), np.minimum(A, B))
    close(torch.erf(a), [[math.erf(v) for v in row] for row in A.astype(float)])
    with pytest.raises(RuntimeError, match="At least one"):
        a.clamp()


def test_matmul_family(torch):
    a, b = torch.tensor(A), torch.tensor(B)
    close(torch.matmul(a, b.T), A @ B.T)
    close(torch.mm(a, b.t()), A @ B.T)
    batch = np.stack([A, B])
    close(torch.bmm(torch.tensor(batch), torch.tensor(batch).mT), batch @ batch.transpose(0, 2, 1))
    close(torch.einsum("ij,kj->ik", a, b), np.einsum("ij,kj->ik", A, B))
    close(torch.einsum("bij->bji", [torch.tensor(batch)]), batch.transpose(0, 2, 1))
    close(torch.outer(a[0], b[1]), np.outer(A[0], B[1]))
    close(torch.dot(a[0], b[0]), np.dot(A[0], B[0]))
    with pytest.raises(RuntimeError, match="mm: self must be a 2D tensor"):
        torch.mm(a[0], b)
    with pytest.raises(RuntimeError, match="1D tensors expected"):
        torch.dot(a, b)


def test_min_max_with_dim_return_values_and_indices(torch):
    a = torch.tensor(A)
    values, indices = torch.max(a, 1)
    close(values, A.max(1))
    assert indices.tolist() == A.argmax(1).tolist() and indices.dtype is torch.int64
    r = a.min(dim=0, keepdim=True)
    assert type(r).__name__ == "min" and r.values.shape == (1, 3)
    close(r.values, A.min(0, keepdims=True))
    assert r.indices.tolist() == [A.argmin(0).tolist()]
    close(a.max(), A.max())
    close(torch.max(a, torch.tensor(B)), np.maximum(A, B))
    assert a.argmax().item() == int(A.argmax()) and a.argmin(1).tolist() == A.argmin(1).tolist()
    close(a.amax(1), A.max(1))


def test_reductions_match_numpy(torch):
    a = torch.tensor(A)
    close(a.prod(1), A.prod(1))
    assert torch.tensor([2, 3]).prod().dtype is torch.int64
    close(a.std(), A.std(ddof=1))
    close(a.var(1, unbiased=False), A.var(1))
    close(a.var(0, correction=0, keepdim=True), A.var(0, keepdims=True))
    close(a.norm(), np.linalg.norm(A))
    close(a.norm(p=1, dim=1), np.abs(A).sum(1))
    close(a.cumsum(1), A.cumsum(1))
    assert torch.tensor([1, 2]).cumsum(0).dtype is torch.int64
    assert (a > 0).all().item() is False and (a > 0).any(1).tolist() == [True, True]
    v, i = a.topk(2)
    close(v, -np.sort(-A, 1)[:, :2])
    assert i.tolist() == np.argsort(-A, 1, kind="stable")[:, :2].tolist()
    s = a.sort(dim=0, descending=True)
    close(s.values, -np.sort(-A, 0))
    assert a.argsort(1).tolist() == np.argsort(A, 1, kind="stable").tolist()


def test_allclose_isclose_equal(torch):
    a = torch.tensor(A)
    assert torch.allclose(a, a + 1e-7) and not torch.allclose(a, a + 1e-3)
    assert torch.isclose(a, a + 1).tolist() == [[False] * 3] * 2
    assert torch.equal(a, a.clone()) and not torch.equal(a, a[:1]) and not a.equal(a + 1)


# -- shape and indexing functions ---------------------------------------------------------------

def test_shape_functions(torch):
    a, b = torch.tensor(A), torch.tensor(B)
    close(torch.cat([a, b], 1), np.concatenate([A, B], 1))
    assert torch.cat([a, torch.tensor(B, dtype=torch.float64)]).dtype is torch.float64
    close(torch.stack([a, b], 1), np.stack([A, B], 1))
    assert [c.shape for c in a.chunk(2, 1)] == [(2, 2), (2, 1)]
    assert [c.shape for c in torch.split(a, [1, 2], 1)] == [(2, 1), (2, 2)]
    close(a.unbind(1)[2], A[:, 2])
    close(a.flatten(), A.ravel())
    close(a.reshape(3, 2), A.reshape(3, 2))
    close(a.transpose(0, 1), A.T)
    close(torch.tensor(np.stack([A, B])).permute(2, 0, 1), np.stack([A, B]).transpose(2, 0, 1))
    close(a.t(), A.T)
    close(a.T, A.T)
    assert a.unsqueeze(0).shape == (1, 2, 3) and a[None].squeeze().shape == (2, 3)
    assert a[:, :1].squeeze(1).shape == (2,)
    close(a.narrow(1, 1, 2), A[:, 1:3])
    close(a[:1].expand(3, 3), np.broadcast_to(A[:1], (3, 3)))
    close(a[:1].expand_as(torch.tensor(np.zeros((4, 3)))), np.broadcast_to(A[:1], (4, 3)))
    close(a.repeat(2, 1), np.tile(A, (2, 1)))
    close(a.roll(1, 1), np.roll(A, 1, 1))
    close(a.flip(0), A[::-1])
    close(a.tril(), np.tril(A))
    close(torch.triu(a, 1), np.triu(A, 1))
    close(a.view_as(torch.zeros(3, 2)), A.reshape(3, 2))
    close(a.reshape_as(torch.zeros(6)), A.ravel())


def test_index_functions(torch):
    a = torch.tensor(A)
    idx = torch.tensor([2, 0])
    close(a.index_select(1, idx), A[:, [2, 0]])
    gi = torch.tensor([[0, 0], [1, 0]])
    close(torch.gather(a, 1, gi), np.take_along_axis(A, np.array([[0, 0], [1, 0]]), 1))
    z = torch.zeros(2, 3)
    z.scatter_(1, torch.tensor([[2], [0]]), torch.tensor([[5.0], [6.0]]))
    assert z.tolist() == [[0, 0, 5], [6, 0, 0]]
    close(a.masked_fill(a < 0, -9.0), np.where(A < 0, -9, A))
    m = torch.tensor(A)
    m.masked_fill_(m > 1, 0.0)
    close(m, np.where(A > 1, 0, A))
    close(torch.where(a > 0, a, torch.tensor(B)), np.where(A > 0, A, B))
    close(torch.where(a > 0, a, 0.0), np.where(A > 0, A, 0))


# -- creation and random numbers ------------------------------------------------------------------

def test_creation_functions(torch):
    close(torch.linspace(0, 1, 5), np.linspace(0, 1, 5))
    close(torch.eye(3, 2), np.eye(3, 2))
    a = torch.tensor(A)
    for fn, ref in ((torch.zeros_like, np.zeros_like), (torch.ones_like, np.ones_like)):
        r = fn(a)
        assert r.dtype is a.dtype and r.shape == a.shape
        close(r, ref(A))
    assert torch.empty_like(a, dtype=torch.int8).dtype is torch.int8
    close(torch.full_like(a, 7), np.full_like(A, 7))
    n = a.new_zeros(2, 2)
    assert n.dtype is torch.float32 and n.tolist() == [[0, 0], [0, 0]]
    assert a.new_ones(3).tolist() == [1, 1, 1] and a.new_full((2,), 4).tolist() == [4, 4]
    assert a.new_empty(2).shape == (2,) and a.new_tensor([1, 2]).dtype is torch.float32


def _draws(rank, torch, seed, out):
    if seed is not None:
        torch.manual_seed(seed)
    out[rank] = (torch.rand(3).tolist(), torch.randn(2).tolist(), torch.randint(0, 10, (4,)).tolist(),
                 torch.randperm(5).tolist())


def test_random_is_per_rank_deterministic_and_seeded(torch):
    runs = []
    for ctx_seed in (0, 0, 1):
        with coopsim.RuntimeContext(seed=ctx_seed) as ctx:
            out = {}
            ctx.multiprocessing.spawn(_draws, args=(ctx, 5, out), nprocs=2)
            runs.append(out)
    assert runs[0] == runs[1]  # C9
    assert runs[0][0] == runs[0][1]  # same manual seed on two ranks: same values, as torch
    assert runs[0] != runs[2]  # the context seed enters the stream
    r = runs[0][0]
    assert all(0 <= v < 1 for v in r[0]) and all(0 <= v < 10 for v in r[2]) and sorted(r[3]) == list(range(5))


def test_random_draws_of_one_rank_do_not_move_another_ranks_stream():
    def worker(rank, torch, out):
        torch.manual_seed(1)
        if rank == 0:
            torch.rand(100)  # rank 0 draws more
        out[rank] = torch.rand(2).tolist()

    with coopsim.RuntimeContext() as ctx:
        out = {}
        ctx.multiprocessing.spawn(worker, args=(ctx, out), nprocs=2)
        with coopsim.RuntimeContext() as other:
            other.manual_seed(1)
            assert out[1] == other.rand(2).tolist() and out[0] != out[1]


def test_generator_in_place_fills_and_cuda_seeds(torch):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, generator=g)
    g2 = torch.Generator()
    g2.manual_seed(3)
    assert torch.rand(4, generator=g2).tolist() == x.tolist() and g.initial_seed() == 3
    t = torch.zeros(1000).normal_(2.0, 0.5)
    assert abs(t.mean().item() - 2.0) < 0.1 and abs(t.std().item() - 0.5) < 0.05
    u = torch.zeros(1000).uniform_(-1, 1)
    assert -1 <= u.min().item() and u.max().item() < 1
    torch.cuda.manual_seed(9)
    first = torch.randn(3).tolist()
    torch.cuda.manual_seed_all(9)
    assert torch.randn(3).tolist() == first
    assert torch.rand_like(torch.tensor(A)).shape == A.shape and torch.randn_like(torch.tensor(A)).dtype is torch.float32


# -- nn.functional and autograd stubs --------------------------------------------------------------

def _softmax(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def test_functional_matches_numpy(torch):
    F = torch.nn.functional
    a = torch.tensor(A)
    close(F.relu(a), np.maximum(A, 0))
    erf = np.vectorize(math.erf)
    close(F.gelu(a), A * 0.5 * (1 + erf(A / math.sqrt(2))))
    close(F.gelu(a, approximate="tanh"), 0.5 * A * (1 + np.tanh(math.sqrt(2 / math.pi) * (A + 0.044715 * A ** 3))))
    close(F.silu(a), A * _sigmoid(A))
    close(F.sigmoid(a), _sigmoid(A))
    close(F.tanh(a), np.tanh(A))
    close(F.softmax(a, dim=1), _softmax(A, 1))
    close(F.log_softmax(a, dim=0), np.log(_softmax(A, 0)))
    w, bias = torch.tensor(B[0]), torch.tensor(B[1])
    mean, var = A.mean(1, keepdims=True), A.var(1, keepdims=True)
    close(F.layer_norm(a, (3,), w, bias), (A - mean) / np.sqrt(var + 1e-5) * B[0] + B[1], atol=1e-5)
    eps = np.finfo(np.float32).eps
    close(F.rms_norm(a, [3], w), A / np.sqrt((A ** 2).mean(1, keepdims=True) + eps) * B[0])
    weight = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    close(F.linear(a, torch.tensor(weight), torch.ones(4)), A @ weight.T + 1)
    table = torch.tensor(weight)
    close(F.embedding(torch.tensor([[3, 0], [1, 1]]), table), weight[[[3, 0], [1, 1]]])
    target = np.array([2, 0])
    logp = np.log(_softmax(A, 1))
    close(F.cross_entropy(a, torch.tensor(target)), -logp[[0, 1], target].mean())
    close(F.cross_entropy(a, torch.tensor(target), reduction="none"), -logp[[0, 1], target])
    close(F.cross_entropy(a, torch.tensor([2, -100])), -logp[0, 2])
    probs = _softmax(B, 1)
    close(F.cross_entropy(a, torch.tensor(probs)), -(probs * logp).sum(1).mean())
    with pytest.raises(RuntimeError, match="approximate"):
        F.gelu(a, approximate="fast")


def test_dropout_is_deterministic_per_seed_and_scales(torch):
    F = torch.nn.functional
    x = torch.ones(1000)
    torch.manual_seed(0)
    d1 = F.dropout(x, 0.25).numpy()
    torch.manual_seed(0)
    d2 = F.dropout(x, 0.25).numpy()
    np.testing.assert_array_equal(d1, d2)
    assert set(np.unique(d1)) <= {0.0, np.float32(1 / 0.75)} and 0.15 < (d1 == 0).mean() < 0.35
    assert F.dropout(x, 0.5, training=False) is x


def test_no_autograd_names(torch):
    t = torch.ones(2, requires_grad=True)
    assert t.requires_grad is False or t.requires_grad  # accepted
    t = torch.tensor([1.0, 2.0], requires_grad=True)
    assert t.requires_grad and t.grad is None and t.detach().requires_grad is False
    assert t.data.tolist() == [1.0, 2.0] and t.detach()._storage is t._storage
    with pytest.raises(NotImplementedError, match="coopsim has no autograd"):
        (t * 2).sum().backward()
    assert torch.is_grad_enabled()
    with torch.no_grad():
        assert not torch.is_grad_enabled()
        with torch.enable_grad():
            assert torch.is_grad_enabled()
    with torch.inference_mode():
        assert not torch.is_grad_enabled()
    with torch.set_grad_enabled(False):
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()

    @torch.no_grad()
    def f():
        return torch.is_grad_enabled()

    assert f() is False and torch.is_grad_enabled()


# -- host tensors ---------------------------------------------------------------------------------

def test_cpu_tensors_need_no_barrier_and_cost_no_device_time():
    with coopsim.RuntimeContext() as ctx:
        x = ctx.ones(1 << 16) * 2
        c = x.cpu()
        t = ctx.engine.now_ns
        assert c.device == ctx.device("cpu") and c.is_cpu and not c.is_cuda and c.tolist()[:2] == [2.0, 2.0]
        y = (c + 1).sum()  # host ops: no device work, no virtual time
        assert y.item() == 3 * (1 << 16) and ctx.engine.now_ns == t
        assert ctx.zeros(3, device="cpu").numpy().tolist() == [0, 0, 0] and ctx.engine.now_ns == t
        back = c.cuda()
        assert back.is_cuda and back.to("cpu").tolist() == c.tolist()
        with pytest.raises(RuntimeError, match="same device, but found at least two devices, cuda:0 and cpu"):
            x + c


def test_cpu_copy_is_costed_as_the_bytes_it_moves():
    with coopsim.RuntimeContext() as ctx:
        dev = ctx.sim.runtime.devices[0]
        x = ctx.zeros(1 << 20)
        after_create = ctx.engine.now_ns
        ctx.cuda.synchronize()
        done = ctx.engine.now_ns
        x.cpu()
        assert ctx.engine.now_ns - done == pytest.approx(dev.op_time_ns(4 << 20))
        assert after_create == 0.0


# -- memory ------------------------------------------------------------------------------------------

def test_memory_accounting_and_peaks(torch):
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    t = torch.zeros(1000)
    u = torch.zeros(500)
    assert torch.cuda.memory_allocated() == base + 6000 == torch.cuda.memory_reserved()
    del u
    assert torch.cuda.max_memory_allocated() == base + 6000 and torch.cuda.memory_allocated() == base + 4000
    torch.cuda.reset_peak_memory_stats()
    assert torch.cuda.max_memory_allocated() == base + 4000
    free, total = torch.cuda.mem_get_info()
    assert total == 16 * 2**30 and free == total - torch.cuda.memory_allocated()
    torch.cuda.empty_cache()
    del t


def test_over_allocation_names_rank_device_requested_and_free():
    def worker(rank, torch):
        if rank == 1:
            held = torch.zeros(1 << 10)
            torch.empty(5 * 2**30)
            del held  # 20 GiB on a 16 GiB device

    with coopsim.RuntimeContext() as ctx:
        with pytest.raises(Exception) as info:
            ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2)
        message = str(info.value)
        assert "OutOfMemoryError" in message and "rank 1 on cuda:1" in message
        assert "Tried to allocate 20.00 GiB (21474836480 bytes)" in message
        assert f"({16 * 2**30 - 4096} bytes) is free" in message
    with coopsim.RuntimeContext() as ctx:
        with pytest.raises(ctx.cuda.OutOfMemoryError, match="CUDA out of memory"):
            ctx.empty(5 * 2**30)


def test_device_name_and_properties():
    with coopsim.RuntimeContext("dgx_a100") as ctx:
        assert ctx.cuda.get_device_name(0) == "a100_sxm4_80gb"
        p = ctx.cuda.get_device_properties(1)
        assert p.name == "a100_sxm4_80gb" and p.total_memory == 80 * 2**30
        with pytest.raises(AttributeError, match="topology YAML does not describe it"):
            p.multi_processor_count


def test_missing_names_point_to_the_supported_table(torch):
    with pytest.raises(AttributeError, match=r"coopsim has no torch.fft \(see docs/torch-surface.md"):
        torch.fft
    assert not hasattr(torch, "foo")


def test_div_rounding_modes_and_fmod_as_torch(torch):
    # torch.div(a, b, rounding_mode=): "trunc" rounds toward zero, "floor" down; both keep an
    # integer dtype (true division gives the default float dtype); fmod takes the dividend's
    # sign, remainder the divisor's (values from torch 2.13 on CPU)
    a = torch.tensor([-7, -6, -1, 0, 5, 7])
    assert torch.div(a, 2, rounding_mode="trunc").tolist() == [-3, -3, 0, 0, 2, 3]
    assert torch.div(a, 2, rounding_mode="floor").tolist() == [-4, -3, -1, 0, 2, 3]
    assert torch.div(a, 2, rounding_mode="trunc").dtype == torch.int64
    assert a.div(-2, rounding_mode="trunc").tolist() == [3, 3, 0, 0, -2, -3]
    assert torch.div(a, 2).dtype == torch.float32
    big = torch.tensor([2**62 + 1])  # exact, with no float round trip
    assert torch.div(big, 3, rounding_mode="trunc").tolist() == [(2**62 + 1) // 3]
    f = torch.tensor([-7.5, 7.5])
    assert torch.div(f, 2, rounding_mode="trunc").tolist() == [-3.0, 3.0]
    assert torch.div(f, 2, rounding_mode="floor").tolist() == [-4.0, 3.0]
    out = torch.zeros(6, dtype=torch.int64)
    torch.div(a, 4, rounding_mode="floor", out=out)
    assert out.tolist() == [-2, -2, -1, 0, 1, 1]
    b = a.clone()
    b.div_(3, rounding_mode="trunc")
    assert b.tolist() == [-2, -2, 0, 0, 1, 2]
    with pytest.raises(RuntimeError, match="rounding_mode to be one of None, 'trunc', or 'floor' but found 'round'"):
        torch.div(a, 2, rounding_mode="round")
    with pytest.raises(TypeError, match="unexpected keyword argument 'rounding_mode'"):
        torch.mul(a, 2, rounding_mode="trunc")
    assert torch.fmod(a, 4).tolist() == [-3, -2, -1, 0, 1, 3]
    assert torch.remainder(a, 4).tolist() == [1, 2, 3, 0, 1, 3]
    assert a.fmod(-4).tolist() == [-3, -2, -1, 0, 1, 3]
    close(torch.fmod(torch.from_numpy(A), 1.25), np.fmod(A, np.float32(1.25)))


def test_flip_takes_dims_by_keyword_and_softmax_is_a_torch_function_and_a_method(torch):
    t = torch.from_numpy(A)
    close(torch.flip(t, dims=[0, 1]), A[::-1, ::-1])
    close(torch.flip(t, [1]), A[:, ::-1])
    close(t.flip(0), A[::-1])
    with pytest.raises(TypeError, match="unexpected keyword argument 'axis'"):
        torch.flip(t, axis=[0])
    e = np.exp(A - A.max(axis=1, keepdims=True))
    close(torch.softmax(t, dim=1), e / e.sum(axis=1, keepdims=True))
    close(t.softmax(-1), e / e.sum(axis=1, keepdims=True))
    close(t.log_softmax(1), np.log(e / e.sum(axis=1, keepdims=True)))
    close(torch.log_softmax(t, 1, dtype=torch.float64), np.log(e / e.sum(axis=1, keepdims=True)))


# -- names found missing by crosschecking a program against torch 2.13 (values, dtypes and
# messages below are what torch 2.13 gives on CPU) ---------------------------------------------

I = np.array([[0, 1, 2, 0], [2, 0, 1, 1]])
M = np.arange(12, dtype=np.float32).reshape(3, 4) / 3 - 1


def test_scatter_add_and_index_add_accumulate_repeated_indices(torch):
    src, index = torch.from_numpy(M), torch.tensor(I)
    expected = np.zeros((3, 4), np.float32)
    np.add.at(expected, (I, np.arange(4)[None, :].repeat(2, 0)), M[:2])
    base = torch.zeros(3, 4)
    assert base.scatter_add_(0, index, src[:2]) is base
    close(base, expected)
    fresh = torch.zeros(3, 4)
    close(torch.scatter_add(fresh, 0, index.int(), src[:2]), expected)  # int32 indices too
    assert fresh.abs().sum().item() == 0  # out of place
    close(torch.zeros(3, 4).scatter_add(0, index[:, :2], src[:2]), np.where(np.arange(4) < 2, expected, 0))
    with pytest.raises(RuntimeError, match=r"Expected index \[2, 4\] to be no larger than self \[3, 4\] apart "
                                           r"from dimension 0 and to be no larger size than src \[1, 4\]"):
        torch.zeros(3, 4).scatter_add_(0, index, src[:1])
    with pytest.raises(RuntimeError, match="Expected self.dtype to be equal to src.dtype"):
        torch.zeros(3, 4).scatter_add_(0, index, src[:2].double())
    with pytest.raises(RuntimeError, match="Expected dtype int32/int64 for index"):
        torch.zeros(3, 4).scatter_add_(0, index.float(), src[:2])
    rows = torch.tensor([0, 0])
    close(torch.zeros(3, 4).index_add_(0, rows, src[:2], alpha=2), np.stack([2 * (M[0] + M[1]), 0 * M[0], 0 * M[0]]))
    close(torch.index_add(torch.ones(3, 4), 1, torch.tensor([3, 3], dtype=torch.int32), src[:, :2]),
          1 + np.stack([np.zeros(3)] * 3 + [M[:, 0] + M[:, 1]], axis=1))
    ints = torch.zeros(2, 2, dtype=torch.int64).index_add_(0, torch.tensor([1]), torch.ones(1, 2, dtype=torch.int64), alpha=1.5)
    assert ints.tolist() == [[0, 0], [1, 1]]  # alpha truncated for integers
    for bad, message in (
            (lambda: torch.zeros(3, 4).index_add_(0, torch.tensor([0.0, 2.0]), src[:2]),
             "index_add_\\(\\): Expected dtype int32/int64 for index but got: Float"),
            (lambda: torch.zeros(3, 4).index_add_(0, torch.tensor([0, 2]), src),
             r"Number of indices \(2\) should be equal to source.size\(dim\): \(3\), for dim: 0"),
            (lambda: torch.zeros(3, 4).index_add_(0, torch.tensor([0, 2]), src[:2].double()),
             r"self \(Float\) and source \(Double\) must have the same scalar type"),
            (lambda: torch.zeros(3, 4).index_add_(0, torch.tensor([0, 2]), src[:2, :3]),
             r"source tensor shape must match self tensor shape, excluding the specified dimension")):
        with pytest.raises(RuntimeError, match=message):
            bad()
    out_of_range = torch.zeros(3, 4).index_add_(0, torch.tensor([0, 5]), src[:2])
    with pytest.raises(RuntimeError, match="device-side assert"):
        out_of_range.tolist()


def test_nonzero_masked_select_unique_bincount_as_torch(torch):
    a = torch.from_numpy(M)
    found = (a > 0).nonzero()
    assert found.dtype is torch.int64 and found.tolist() == np.argwhere(M > 0).tolist()
    rows, cols = torch.nonzero(a > 0, as_tuple=True)
    assert (rows.tolist(), cols.tolist()) == tuple(x.tolist() for x in np.nonzero(M > 0))
    assert torch.tensor(3.0).nonzero().shape == (1, 0) and torch.tensor(0.0).nonzero().shape == (0, 0)
    assert [x.tolist() for x in torch.tensor(3.0).nonzero(as_tuple=True)] == [[0]]
    assert torch.zeros(3).nonzero().shape == (0, 1)
    assert torch.masked_select(a, a > 0).tolist() == M[M > 0].tolist()
    assert a.masked_select(torch.tensor([True, False, True, False])).tolist() == M[:, [0, 2]].reshape(-1).tolist()
    with pytest.raises(RuntimeError, match="masked_select: expected BoolTensor for mask"):
        a.masked_select(a.long())
    x = torch.tensor([3, 1, 3, 2])
    assert torch.unique(x).tolist() == [1, 2, 3] and torch.unique(x).dtype is torch.int64
    values, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    assert (values.tolist(), inverse.tolist(), counts.tolist()) == ([1, 2, 3], [2, 0, 2, 1], [1, 1, 2])
    assert [t.tolist() for t in torch.unique(x, return_counts=True)] == [[1, 2, 3], [1, 1, 2]]
    assert torch.unique(x.reshape(2, 2), return_inverse=True)[1].tolist() == [[2, 0], [2, 1]]
    nans = torch.unique(torch.tensor([1.0, math.nan, math.nan]), return_counts=True)[1]
    assert nans.tolist() == [1, 1, 1]  # NaNs are kept apart
    with pytest.raises(NotImplementedError, match="dim=None only"):
        torch.unique(x, dim=0)
    b = torch.tensor([0, 1, 1, 3])
    assert torch.bincount(b).tolist() == [1, 2, 0, 1] and torch.bincount(b).dtype is torch.int64
    assert b.bincount(minlength=6).tolist() == [1, 2, 0, 1, 0, 0] and b.bincount(minlength=2).tolist() == [1, 2, 0, 1]
    weighted = torch.bincount(b, weights=torch.tensor([0.5, 1.0, 2.0, 3.0]))
    assert weighted.dtype is torch.float32 and weighted.tolist() == [0.5, 3.0, 0.0, 3.0]
    assert torch.bincount(b, weights=torch.tensor([1, 1, 2, 3])).dtype is torch.float64
    assert torch.bincount(torch.tensor([], dtype=torch.int64), minlength=3).tolist() == [0, 0, 0]
    for bad, error, message in (
            (lambda: torch.bincount(torch.tensor([0, -1])), RuntimeError, "1-d non-negative integral inputs"),
            (lambda: torch.bincount(torch.tensor([[0, 1]])), RuntimeError, "1-d non-negative integral inputs"),
            (lambda: torch.bincount(torch.tensor([0.0])), NotImplementedError, "not implemented for 'Float'"),
            (lambda: torch.bincount(b, minlength=-1), RuntimeError, "minlength should be >= 0"),
            (lambda: torch.bincount(b, weights=torch.ones(3)), RuntimeError, "weights should be 1-d")):
        with pytest.raises(error, match=message):
            bad()


def test_size_dependent_ops_wait_for_the_data_that_fixes_the_size_only():
    with coopsim.RuntimeContext() as ctx:
        mask = ctx.tensor([True, False]).reshape(2, 1).expand(2, 512)
        mask_done = mask._storage.last_write
        big = ctx.ones(512, 512)
        slow = big @ big  # pending: masked_select gathers its values on the device
        picked = slow[:2].masked_select(mask)
        assert mask_done.done and not slow._storage.last_write.done and picked.shape == (512,)
        counted = slow[0].nonzero()  # its size depends on slow's values: waits for them
        assert slow._storage.last_write.done and not counted._storage.last_write.done
        assert counted.shape == (512, 1) and picked.tolist() == [512.0] * 512


def test_addmm_and_baddbmm_as_torch(torch):
    a = torch.from_numpy(M)
    close(torch.addmm(torch.ones(3, 3), a, a.t(), beta=0.5, alpha=2), 0.5 + 2 * M @ M.T)
    close(torch.addmm(torch.arange(3.0), a, a.t()), np.arange(3.0) + M @ M.T)  # input broadcasts
    close(torch.full((3, 3), math.nan).addmm(a, a.t(), beta=0), M @ M.T)  # beta=0 ignores NaNs
    c = torch.ones(3, 3)
    assert c.addmm_(a, a.t(), alpha=-1) is c
    close(c, 1 - M @ M.T)
    ints = [torch.ones(2, 2, dtype=torch.int64) for _ in range(3)]
    assert torch.addmm(*ints, beta=2.5, alpha=1.5).tolist() == [[4, 4], [4, 4]]  # truncated scales
    batch = np.stack([M, 2 * M])
    b1, b2 = torch.from_numpy(batch), torch.from_numpy(batch.transpose(0, 2, 1).copy())
    close(torch.baddbmm(torch.ones(3), b1, b2, alpha=0.5), 1 + 0.5 * batch @ batch.transpose(0, 2, 1))
    close(torch.zeros(2, 3, 3).baddbmm_(b1, b2), batch @ batch.transpose(0, 2, 1))
    for bad, message in (
            (lambda: torch.addmm(torch.ones(2), a, a.t()), r"The expanded size of the tensor \(3\) must match "
             r"the existing size \(2\) at non-singleton dimension 1.  Target sizes: \[3, 3\].  Tensor sizes: \[2\]"),
            (lambda: torch.addmm(c, a, a), r"mat1 and mat2 shapes cannot be multiplied \(3x4 and 3x4\)"),
            (lambda: torch.addmm(c, a[None], a.t()), "mat1 must be a matrix, got 3-D tensor"),
            (lambda: torch.addmm(c.double(), a, a.t()), "self and mat2 must have the same dtype, but got Double and Float"),
            (lambda: torch.ones(3).addmm_(a, a.t()), r"Bad in-place call: input tensor size \[3\] and output tensor size \[3, 3\]"),
            (lambda: torch.baddbmm(c.double(), b1, b2), "Input dtypes must be the same, got: input double, batch1: float"),
            (lambda: torch.baddbmm(c, b1, b2[:1]), r"first two dimensions of batch2 tensor to be: \[2, 4\] but got: \[1, 4\]"),
            (lambda: torch.baddbmm(c, b1, b1), r"expanded size of the tensor \(4\) must match the existing size "
             r"\(3\) at non-singleton dimension 2.  Target sizes: \[2, 3, 4\]")):  # before the inner sizes
        with pytest.raises(RuntimeError, match=message):
            bad()


def test_addmm_costs_the_product_and_the_scaled_add():
    with coopsim.RuntimeContext() as ctx:
        x = ctx.ones(256, 256)
        x.sum().item()
        start = ctx.engine.now_ns
        (x @ x).sum().item()
        plain = ctx.engine.now_ns - start
        start = ctx.engine.now_ns
        ctx.addmm(x, x, x).sum().item()
        fused = ctx.engine.now_ns - start
        assert plain < fused < 1.5 * plain  # one op: 2mnk + 2mn flops, one more input read


def test_relu_cumprod_logsumexp_and_sum_dtype(torch):
    a = torch.from_numpy(M)
    close(torch.relu(a), np.maximum(M, 0))
    assert torch.tensor([-1, 2]).relu().tolist() == [0, 2]
    b = a.clone()
    assert b.relu_() is b and b.min().item() == 0.0
    with pytest.raises(RuntimeError, match="Boolean inputs not supported for relu"):
        torch.relu(torch.tensor([True]))
    close((a[0] + 2).cumprod(0), np.cumprod(M[0] + 2))
    ints = torch.tensor([1, 2, 3], dtype=torch.int32).cumprod(0)
    assert ints.tolist() == [1, 2, 6] and ints.dtype is torch.int64
    assert torch.tensor([1, 2, 3]).cumprod(0, dtype=torch.float32).dtype is torch.float32
    close(torch.logsumexp(a, dim=1), np.log(np.exp(M.astype(np.float64)).sum(axis=1)))
    close(a.logsumexp((0, 1), keepdim=True), np.log(np.exp(M.astype(np.float64)).sum()).reshape(1, 1))
    edge = torch.tensor([[-math.inf, -math.inf], [math.inf, 1.0], [1000.0, 1000.0]]).logsumexp(1)
    assert edge.tolist() == [-math.inf, math.inf, pytest.approx(1000 + math.log(2))]
    assert torch.logsumexp(torch.tensor([1, 2]), 0).dtype is torch.float32
    i32 = torch.arange(4, dtype=torch.int32)
    assert i32.sum().dtype is torch.int64 and torch.sum(i32, dtype=torch.int32).dtype is torch.int32
    assert a.sum(1, True, dtype=torch.float64).dtype is torch.float64 and a.sum(dtype=torch.int64).dtype is torch.int64
    assert torch.arange(4).mean(dtype=torch.float32).item() == 1.5
    exact = torch.tensor([1e8, 1.0, -1e8], dtype=torch.float64)
    assert exact.sum().item() == 1.0 and exact.mean(dtype=torch.float64).item() == pytest.approx(1 / 3)
    with pytest.raises(RuntimeError, match="Optional dtype must be either a floating point or complex dtype. Got: Long"):
        a.mean(dtype=torch.int64)


def test_isnan_isinf_isfinite_and_nan_to_num(torch):
    values = np.array([1.0, np.inf, -np.inf, np.nan], np.float32)
    v = torch.from_numpy(values)
    for name, ref in (("isnan", np.isnan), ("isinf", np.isinf), ("isfinite", np.isfinite)):
        got = getattr(torch, name)(v)
        assert got.dtype is torch.bool and got.tolist() == ref(values).tolist()
    assert torch.isfinite(torch.tensor([1, 2])).tolist() == [True, True]
    assert torch.isnan(torch.tensor([1, 2])).tolist() == [False, False]
    f32 = float(np.finfo(np.float32).max)
    assert torch.nan_to_num(v).tolist() == [1.0, f32, -f32, 0.0]
    assert v.nan_to_num(nan=0.5, posinf=9, neginf=-9.0).tolist() == [1.0, 9.0, -9.0, 0.5]
    assert torch.nan_to_num(v.half()).tolist() == [1.0, 65504.0, -65504.0, 0.0]
    assert torch.nan_to_num(v.half(), posinf=1e6).tolist()[1] == math.inf  # overflows the dtype
    assert torch.nan_to_num(torch.tensor([1, 2]), nan=1.5).tolist() == [1, 2]
    w = v.clone()
    assert w.nan_to_num_(1.0).tolist() == [1.0, f32, -f32, 1.0] and w.tolist()[3] == 1.0


def test_diag_and_tensor_split(torch):
    a = torch.from_numpy(M)
    for k in (0, 2, -1, 5, -5):
        close(torch.diag(a, k), np.diagonal(M, k))
    assert torch.diag(torch.tensor([1, 2, 3])).tolist() == np.diag([1, 2, 3]).tolist()
    assert torch.diag(torch.tensor([1.0, 2.0]), diagonal=-2).tolist() == np.diag([1.0, 2.0], -2).tolist()
    assert a.diag(1).is_contiguous()
    with pytest.raises(RuntimeError, match="diag\\(\\): Supports 1D or 2D tensors. Got 3D"):
        torch.diag(a[None])
    r = torch.arange(7)
    assert [c.tolist() for c in torch.tensor_split(torch.arange(5), 3)] == [[0, 1], [2, 3], [4]]
    assert [c.tolist() for c in torch.tensor_split(torch.arange(3), 5)] == [[0], [1], [2], [], []]
    assert [c.tolist() for c in torch.tensor_split(r, [1, 5])] == [[0], [1, 2, 3, 4], [5, 6]]
    assert [c.tolist() for c in r.tensor_split((5, 10, 2))] == [[0, 1, 2, 3, 4], [5, 6], [], [2, 3, 4, 5, 6]]
    assert [c.tolist() for c in torch.tensor_split(r, [-2])] == [[0, 1, 2, 3, 4], [5, 6]]
    assert [c.tolist() for c in torch.tensor_split(r, torch.tensor([1, 3]))] == [[0], [1, 2], [3, 4, 5, 6]]
    parts = torch.tensor_split(a, 3, dim=1)
    assert type(parts) is tuple and [p.shape for p in parts] == [(3, 2), (3, 1), (3, 1)]
    parts[0].fill_(7.0)  # views of a's storage
    assert a[:, :2].tolist() == [[7.0, 7.0]] * 3
    assert [p.shape for p in torch.tensor_split(a, sections=2)] == [(2, 4), (1, 4)]
    with pytest.raises(RuntimeError, match="number of sections must be larger than 0, got 0"):
        torch.tensor_split(r, 0)
    with pytest.raises(RuntimeError, match="at least a 1-dimensional tensor"):
        torch.tensor_split(torch.tensor(3), 1)


def test_size_is_a_tuple_with_torch_repr(torch):
    t = torch.zeros(2, 3)
    for s in (t.shape, t.size(), torch.Size([2, 3])):
        assert type(s) is torch.Size and s == (2, 3) and hash(s) == hash((2, 3))
        assert repr(s) == str(s) == f"{s}" == "torch.Size([2, 3])" and s.numel() == 6
    assert t.size(1) == 3 and type(t.size(1)) is int
    assert torch.Size([]).numel() == 1 and repr(torch.Size()) == "torch.Size([])"
    assert type(t.shape[1:]) is torch.Size and t.shape[1:] == (3,) and t.shape[0] == 2
    assert type(t.shape + (4,)) is torch.Size and type((1,) + t.shape) is torch.Size
    assert (1,) + t.shape == (1, 2, 3) and t.shape * 2 == (2, 3, 2, 3)
    assert torch.Size([np.int64(3), torch.tensor(2), True]) == (3, 2, 1)
    with pytest.raises(TypeError, match=r"torch.Size\(\) takes an iterable of 'int' \(item 0 is 'float'\)"):
        torch.Size([2.5])
    import pickle
    assert pickle.loads(pickle.dumps(t.shape)) == (2, 3)


def test_tensors_print_as_torch_prints_them_on_a_gpu(torch):
    # torch 2.13's text for the same tensors on cuda:0 (torch/_tensor_str.py, default options)
    assert repr(torch.tensor([1.5, 2.0])) == "tensor([1.5000, 2.0000], device='cuda:0')"
    assert str(torch.tensor([1.0, -2.0, 30.0])) == "tensor([ 1., -2., 30.], device='cuda:0')"
    assert repr(torch.tensor([1e-5, 1.0])) == "tensor([1.0000e-05, 1.0000e+00], device='cuda:0')"
    assert repr(torch.tensor([1, -20], dtype=torch.int32)) == "tensor([  1, -20], device='cuda:0', dtype=torch.int32)"
    assert repr(torch.tensor(7)) == "tensor(7, device='cuda:0')"
    assert repr(torch.zeros(0, 3).cpu()) == "tensor([], size=(0, 3))"
    assert repr(torch.arange(6).reshape(2, 3).cpu()) == "tensor([[0, 1, 2],\n        [3, 4, 5]])"
    summarized = repr(torch.arange(2000).cpu())
    assert summarized == "tensor([   0,    1,    2,  ..., 1997, 1998, 1999])"
    wrapped = repr((torch.arange(30, dtype=torch.float32) * 1.5).cpu()).splitlines()
    assert wrapped[0] == "tensor([ 0.0000,  1.5000,  3.0000,  4.5000,  6.0000,  7.5000,  9.0000, 10.5000,"
    assert wrapped[1].startswith("        12.0000,") and len(wrapped) == 4
