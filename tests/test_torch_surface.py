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
