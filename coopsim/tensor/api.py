"""``TensorAPI``: the torch namespace's functions and constants over one runtime.

``RuntimeContext`` exposes every public name of ``TensorAPI`` (docs/torch-surface.md is
generated from it). This class is the one place that lists them; most delegate: a torch
function that is also a Tensor method (``torch.exp(t)`` is ``t.exp()``) is listed in
``METHOD_FUNCTIONS``; the others (creation, random numbers, dtypes, grad modes) are here.
Tensors are created on the caller's current device (a rank's own; device 0 in main), on
``device=`` ("cuda", "cuda:i", i), or on the host (``device="cpu"``).
"""

from __future__ import annotations

import numpy as np

from coopsim.tensor import dtypes, indexing, outarg, products, shape as tshape
from coopsim.tensor.dtypes import DType, bool_, finfo, float32, float64, iinfo, int64
from coopsim.tensor.functional import NN
from coopsim.tensor.grad import GradMode
from coopsim.tensor.ops import allocate, host_array, host_value, scalar, size_arg
from coopsim.tensor.random import Generator, generator_for, manual_seed_all, sample
from coopsim.tensor.state import default_dtype, process_state
from coopsim.tensor.size import Size
from coopsim.tensor.tensor import Device, Tensor, device_of
from coopsim.tensor.transfer import created, given

# torch.<name>(tensor, *args) is tensor.<name>(*args) for each of these.
METHOD_FUNCTIONS = (
    "abs", "neg", "sign", "exp", "log", "log2", "log1p", "expm1", "sqrt", "rsqrt", "reciprocal",
    "sin", "cos", "tanh", "sigmoid", "erf", "floor", "ceil", "round", "trunc", "square",
    "logical_not", "bitwise_not", "clamp", "clip", "pow", "add", "sub", "mul", "div", "eq", "ne",
    "lt", "le", "gt", "ge", "remainder", "fmod", "floor_divide", "maximum", "minimum", "atan2",
    "bitwise_and", "bitwise_or", "bitwise_xor", "logical_and", "logical_or", "logical_xor",
    "isclose", "allclose", "equal", "matmul", "mm", "bmm", "dot", "outer", "sum", "mean", "max",
    "min", "amax", "amin", "argmax", "argmin", "prod", "var", "std", "norm", "all", "any",
    "cumsum", "sort", "argsort", "topk", "split", "chunk", "narrow", "unbind", "squeeze",
    "unsqueeze", "permute", "movedim", "flatten", "reshape", "transpose", "t", "roll", "flip",
    "tril", "triu", "index_select", "gather", "masked_fill", "clone", "numel", "detach",
    "is_floating_point", "softmax", "log_softmax", "scatter_add", "index_add", "masked_select",
    "nonzero", "unique", "bincount", "addmm", "baddbmm", "relu", "cumprod", "logsumexp", "isnan",
    "isinf", "isfinite", "nan_to_num", "diag", "tensor_split",
)


class TensorAPI:
    """torch-named tensor functions, creation and dtypes over the runtime port ``rt``."""

    Tensor = Tensor
    Size = Size
    dtype = DType
    device = Device
    float32 = float32
    float16 = dtypes.float16
    bfloat16 = dtypes.bfloat16
    float64 = float64
    double = float64
    int32 = dtypes.int32
    int64 = int64
    int16 = dtypes.int16
    short = dtypes.int16
    int8 = dtypes.int8
    uint8 = dtypes.uint8
    bool = bool_
    finfo = finfo
    iinfo = iinfo
    nn = NN()
    cat = staticmethod(tshape.cat)
    concat = staticmethod(tshape.cat)
    stack = staticmethod(tshape.stack)
    einsum = staticmethod(products.einsum)
    where = staticmethod(indexing.where)
    promote_types = staticmethod(dtypes.promote)
    can_cast = staticmethod(dtypes.can_cast)

    def __init__(self, rt):
        self._rt = rt  # the runtime port

    def _default(self, dtype, what: str) -> DType:
        return dtypes.dtype_arg(dtype, default_dtype(self._rt) if dtype is None else None, what)

    # -- dtypes and modes --------------------------------------------------------------------

    def get_default_dtype(self) -> DType:
        return default_dtype(self._rt)

    def set_default_dtype(self, d) -> None:
        """The caller's default floating dtype (float32 or float64, as torch allows; also
        float16/bfloat16)."""
        if not isinstance(d, DType) or not d.is_floating_point:
            raise TypeError(f"only floating-point types are supported as the default type, got {d!r}")
        process_state(self._rt).default_dtype = d

    def result_type(self, tensor1, tensor2) -> DType:
        operands = [(t._dtype, t._array.ndim) if isinstance(t, Tensor) else scalar(t, "result_type")
                    for t in (tensor1, tensor2)]
        return dtypes.result_type(operands, process_state(self._rt).default_dtype)

    def is_tensor(self, obj) -> bool:
        return isinstance(obj, Tensor)

    def no_grad(self) -> GradMode:
        return GradMode(self._rt, False)

    def enable_grad(self) -> GradMode:
        return GradMode(self._rt, True)

    def inference_mode(self, mode: bool = True) -> GradMode:
        return GradMode(self._rt, not mode)

    def set_grad_enabled(self, mode: bool) -> GradMode:
        """Sets the mode at once (as torch) and restores it when used as a context manager."""
        state = process_state(self._rt)
        previous, state.grad_enabled = state.grad_enabled, bool(mode)
        return _SetGrad(self._rt, previous)

    def is_grad_enabled(self) -> bool:
        return process_state(self._rt).grad_enabled

    # -- creation ----------------------------------------------------------------------------

    def empty(self, *size, dtype=None, device=None, requires_grad=False) -> Tensor:
        """No op, no time, as torch.empty; the memory reads as zeros (deterministic, C9)."""
        shape = size_arg(size, "empty")
        dtype = self._default(dtype, "empty")
        return allocate(Tensor._make, self._rt, device_of(self._rt, device, "empty"), shape, dtype, np.zeros)

    def zeros(self, *size, dtype=None, device=None, requires_grad=False) -> Tensor:
        return self._make("zeros", size, dtype, device, np.zeros)

    def ones(self, *size, dtype=None, device=None, requires_grad=False) -> Tensor:
        return self._make("ones", size, dtype, device, np.ones)

    def _make(self, what, size, dtype, device, init, default=None):
        if dtype is None and default is None:  # the usual call: the caller's default dtype
            dtype = default_dtype(self._rt)
        else:
            dtype = dtypes.dtype_arg(dtype, default, what) if default else self._default(dtype, what)
        return created(Tensor._make, self._rt, what, device_of(self._rt, device, what), size_arg(size, what), dtype, init)

    def full(self, size, fill_value, *, dtype=None, device=None, requires_grad=False) -> Tensor:
        """dtype from ``fill_value`` if not given: bool -> bool, int -> int64, float -> default."""
        value = scalar(fill_value, "full")
        dtype = dtypes.dtype_arg(dtype, bool_ if type(value) is bool else int64 if type(value) is int
                                 else process_state(self._rt).default_dtype, "full")
        v = host_value(value, dtype, "full")
        size = size if isinstance(size, (tuple, list)) else (size,)
        return self._make("full", size, dtype, device, lambda s, np_dtype: np.full(s, v, np_dtype), dtype)

    def arange(self, start, end=None, step=1, *, dtype=None, device=None, requires_grad=False) -> Tensor:
        """``[start, end)`` by ``step``; int64 if all are ints, else the default dtype."""
        if end is None:
            start, end = 0, start
        start, end, step = (scalar(v, "arange") for v in (start, end, step))
        if step == 0:
            raise RuntimeError("arange: step must be nonzero")
        if (end - start) * step < 0:
            raise RuntimeError(f"arange: upper bound and larger bound inconsistent with step sign "
                               f"(start={start}, end={end}, step={step})")
        exact = all(type(v) is int for v in (start, end, step))
        dtype = dtypes.dtype_arg(dtype, int64 if exact else process_state(self._rt).default_dtype, "arange")
        with np.errstate(all="ignore"):
            data = np.arange(start, end, step, dtype=np.int64 if exact else np.float64).astype(dtype._np)
        return self._make("arange", data.shape, dtype, device, given(data), dtype)

    def linspace(self, start, end, steps, *, dtype=None, device=None, requires_grad=False) -> Tensor:
        if steps < 0:
            raise RuntimeError("linspace(): number of steps must be non-negative")
        dtype = self._default(dtype, "linspace")
        data = np.linspace(float(start), float(end), int(steps)).astype(dtype._np)
        return self._make("linspace", data.shape, dtype, device, given(data), dtype)

    def eye(self, n, m=None, *, dtype=None, device=None, requires_grad=False) -> Tensor:
        m = n if m is None else m
        dtype = self._default(dtype, "eye")
        return self._make("eye", (n, m), dtype, device, lambda s, np_dtype: np.eye(n, m, dtype=np_dtype), dtype)

    def tensor(self, data, *, dtype=None, device=None, requires_grad=False) -> Tensor:
        """A copy of host ``data`` (numbers, nested lists, numpy arrays: float64 stays
        float64) on the device; of a Tensor, a device copy (no host read)."""
        if isinstance(data, Tensor):
            return data.to(dtype=dtype, device=device, copy=True)
        array, dtype = host_array(data, dtype, "tensor", process_state(self._rt).default_dtype)
        t = self._make("tensor", array.shape, dtype, device, given(array), dtype)
        return t.requires_grad_(requires_grad)

    def as_tensor(self, data, dtype=None, device=None) -> Tensor:
        if isinstance(data, Tensor):
            return data.to(dtype=dtype, device=device)
        return self.tensor(data, dtype=dtype, device=device)

    def from_numpy(self, ndarray) -> Tensor:
        """A copy of ``ndarray`` on the current device (torch's shares memory with a CPU
        tensor; sharing would let the host write device memory behind the stream)."""
        if not isinstance(ndarray, np.ndarray):
            raise TypeError(f"from_numpy: expected np.ndarray (got {type(ndarray).__name__})")
        dtype = dtypes.dtype_of_numpy(ndarray.dtype, "from_numpy")
        return self._make("from_numpy", ndarray.shape, dtype, None,
                          given(ndarray.astype(dtype._np, copy=True)), dtype)

    def _like(self, what, t, dtype, device, init):
        place = t._storage.device if device is None else device_of(self._rt, device, what)
        return created(Tensor._make, self._rt, what, place, t._array.shape, dtypes.dtype_arg(dtype, t._dtype, what), init)

    def zeros_like(self, input, *, dtype=None, device=None, requires_grad=False) -> Tensor:
        return self._like("zeros_like", input, dtype, device, np.zeros)

    def ones_like(self, input, *, dtype=None, device=None, requires_grad=False) -> Tensor:
        return self._like("ones_like", input, dtype, device, np.ones)

    def empty_like(self, input, *, dtype=None, device=None, requires_grad=False) -> Tensor:
        return self._like("empty_like", input, dtype, device, np.zeros)

    def full_like(self, input, fill_value, *, dtype=None, device=None, requires_grad=False) -> Tensor:
        v = host_value(scalar(fill_value, "full_like"), dtypes.dtype_arg(dtype, input._dtype, "full_like"),
                       "full_like")
        return self._like("full_like", input, dtype, device, lambda s, np_dtype: np.full(s, v, np_dtype))

    # -- random numbers (coopsim.tensor.random) ----------------------------------------------

    def Generator(self, device="cpu") -> Generator:
        return Generator(self._rt, str(device))

    def manual_seed(self, seed) -> Generator:
        """Seeds the caller's CPU and device generators; returns the CPU one."""
        manual_seed_all(self._rt, seed, cpu=True, cuda=True)
        return generator_for(self._rt, None)

    def initial_seed(self) -> int:
        return generator_for(self._rt, None).initial_seed()

    def _random(self, what, kind, size, dtype, device, generator, low=0.0, high=1.0, default=None):
        place = device_of(self._rt, device, what)
        dtype = dtypes.dtype_arg(dtype, default, what) if default else self._default(dtype, what)
        if kind != "integers" and not dtype.is_floating_point:
            raise RuntimeError(f'"{what}" not implemented for \'{dtype._scalar_name}\'')
        shape = size_arg(size, what)
        values = sample(generator_for(self._rt, place.index, generator), kind, shape, dtype._np, low, high)
        return created(Tensor._make, self._rt, what, place, shape, dtype, given(values))

    def rand(self, *size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
        return self._random("rand", "uniform", size, dtype, device, generator)

    def randn(self, *size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
        return self._random("randn", "normal", size, dtype, device, generator)

    def randint(self, *args, size=None, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
        """``randint(high, size)`` or ``randint(low, high, size)``: int64 in ``[low, high)``."""
        args = list(args)
        if size is None:
            size = args.pop()
        low, high = (0, args[0]) if len(args) == 1 else tuple(args)
        if high <= low:
            raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
        return self._random("randint", "integers", tuple(size), dtype, device, generator, low, high, int64)

    def randperm(self, n, *, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
        place = device_of(self._rt, device, "randperm")
        dtype = dtypes.dtype_arg(dtype, int64, "randperm")
        values = generator_for(self._rt, place.index, generator).numpy.permutation(int(n)).astype(dtype._np)
        return created(Tensor._make, self._rt, "randperm", place, values.shape, dtype, given(values))

    def rand_like(self, input, *, dtype=None, device=None) -> Tensor:
        return self.rand(input._array.shape, dtype=dtype or input._dtype, device=device or input.device)

    def randn_like(self, input, *, dtype=None, device=None) -> Tensor:
        return self.randn(input._array.shape, dtype=dtype or input._dtype, device=device or input.device)

    def normal(self, mean, std, size, *, generator=None, dtype=None, device=None) -> Tensor:
        """``normal(mean, std, size)`` with float mean and std."""
        return self._random("normal", "normal", tuple(size), dtype, device, generator, mean, std)

    # torch's aliases; they shadow builtins in this class body only, so they come last.
    float = float32
    half = dtypes.float16
    int = dtypes.int32
    long = int64


class _SetGrad:
    """What ``set_grad_enabled(mode)`` returns: the mode is already set; leaving a ``with``
    block restores the previous one."""

    def __init__(self, rt, previous: bool):
        self._rt, self._previous = rt, previous

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        process_state(self._rt).grad_enabled = self._previous
        return False


for _name in METHOD_FUNCTIONS:
    setattr(TensorAPI, _name, staticmethod(getattr(Tensor, _name)))
for _name, _fn in outarg.functions().items():  # the elementwise ones also take ``out=``
    setattr(TensorAPI, _name, staticmethod(_fn))
del _name, _fn
