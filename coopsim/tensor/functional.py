"""``torch.nn.functional`` (``ctx.nn.functional``; docs/adr/0016-torch-surface.md).

Each function is one fused device op computed with numpy in the input's opmath (float32
for 16-bit floats) and costed as bytes read + written and the flops an element listed in
``FLOPS`` (``linear``: ``2 * rows * in * out`` + the bias). Formulas follow the PyTorch docs
of each function (``torch/nn/functional.py``): ``gelu`` exact ``x * Phi(x)`` or, with
``approximate="tanh"``, ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``;
``rms_norm``'s ``eps`` defaults to ``finfo(dtype).eps``; ``cross_entropy`` takes class
indices (with ``ignore_index``) or class probabilities, ``label_smoothing`` and the three
reductions. ``dropout`` draws its mask from the caller's device generator (C9).
"""

from __future__ import annotations

import math

import numpy as np

from coopsim.tensor import math as tmath, ops
from coopsim.tensor.dtypes import finfo, int64
from coopsim.tensor.indexing import index_select
from coopsim.tensor.kernel import new, run
from coopsim.tensor.math import _erf, unary
from coopsim.tensor.random import generator_for

FLOPS = {"relu": 1, "gelu": 8, "silu": 4, "softmax": 5, "log_softmax": 5, "layer_norm": 8,
         "rms_norm": 4, "dropout": 1, "cross_entropy": 6}
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _float(x, what):
    if not x._dtype.is_floating_point:
        raise RuntimeError(f'"{what}" not implemented for \'{x._dtype._scalar_name}\'')
    return x._dtype._opmath


def _elementwise(what, x, fn, inplace=False):
    compute = _float(x, what)
    out = x if inplace else new(x, x._array.shape, x._dtype)
    run(what, [x], [out], lambda a: fn(a.astype(compute, copy=False)), FLOPS[what] * x._array.size)
    return out


def relu(input, inplace=False):
    return tmath.relu(input, out=input if inplace else None)


def gelu(input, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"approximate argument must be either none or tanh, got {approximate!r}")
    if approximate == "tanh":
        return _elementwise("gelu", input, lambda a: 0.5 * a * (1 + np.tanh(_SQRT_2_OVER_PI * (a + 0.044715 * a ** 3))))
    return _elementwise("gelu", input, lambda a: (a * 0.5 * (1 + _erf(a / math.sqrt(2.0)))).astype(a.dtype))


def silu(input, inplace=False):
    return _elementwise("silu", input, lambda a: a / (1 + np.exp(-a)), inplace)


def sigmoid(input):
    return unary("sigmoid", input)


def tanh(input):
    return unary("tanh", input)


def _softmax(what, input, dim, dtype, log):
    if dim is None:
        dim = 0 if input._array.ndim in (0, 1, 3) else 1  # torch's legacy implicit dim
    d = ops.wrap_dim(dim, input._array.ndim, what)
    x = input.to(dtype) if dtype is not None else input
    compute = _float(x, what)
    out = new(x, x._array.shape, x._dtype)

    def fn(a):
        a = a.astype(compute, copy=False)
        ax = d if a.ndim else None
        shifted = a - np.max(a, axis=ax, keepdims=True)
        e = np.exp(shifted)
        s = np.sum(e, axis=ax, keepdims=True)
        return shifted - np.log(s) if log else e / s

    run(what, [x], [out], fn, FLOPS[what] * x._array.size)
    return out


def softmax(input, dim=None, dtype=None):
    return _softmax("softmax", input, dim, dtype, log=False)


def log_softmax(input, dim=None, dtype=None):
    return _softmax("log_softmax", input, dim, dtype, log=True)


def _normalized_axes(what, input, normalized_shape):
    shape = tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else (normalized_shape,)
    if not shape or input._array.shape[len(input._array.shape) - len(shape):] != shape:
        raise RuntimeError(f"{what}: Given normalized_shape={list(shape)}, expected input with shape "
                           f"[*, {', '.join(map(str, shape))}], but got input of size {list(input._array.shape)}")
    return tuple(range(input._array.ndim - len(shape), input._array.ndim))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-05):
    axes = _normalized_axes("layer_norm", input, normalized_shape)
    compute = _float(input, "layer_norm")
    tensors = [input] + [t for t in (weight, bias) if t is not None]
    out = new(input, input._array.shape, input._dtype)
    has_w, has_b = weight is not None, bias is not None

    def fn(a, *wb):
        a = a.astype(compute, copy=False)
        mean = np.mean(a, axis=axes, keepdims=True)
        var = np.mean((a - mean) ** 2, axis=axes, keepdims=True)
        r = (a - mean) / np.sqrt(var + compute.type(eps))
        it = iter(wb)
        if has_w:
            r = r * next(it)
        if has_b:
            r = r + next(it)
        return r

    run("layer_norm", tensors, [out], fn, FLOPS["layer_norm"] * input._array.size)
    return out


def rms_norm(input, normalized_shape, weight=None, eps=None):
    axes = _normalized_axes("rms_norm", input, normalized_shape)
    compute = _float(input, "rms_norm")
    eps = finfo(input._dtype).eps if eps is None else eps
    tensors = [input] + ([weight] if weight is not None else [])
    out = new(input, input._array.shape, input._dtype)

    def fn(a, *w):
        a = a.astype(compute, copy=False)
        r = a / np.sqrt(np.mean(a * a, axis=axes, keepdims=True) + compute.type(eps))
        return r * w[0] if w else r

    run("rms_norm", tensors, [out], fn, FLOPS["rms_norm"] * input._array.size)
    return out


def linear(input, weight, bias=None):
    """``input @ weight.T + bias``."""
    out = ops.matmul(input, weight.t() if weight._array.ndim == 2 else weight)
    if bias is not None:
        out.add_(bias)
    return out


def dropout(input, p=0.5, training=True, inplace=False, *, generator=None):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    gen = generator_for(input._storage.rt, input._storage.device.index, generator)
    keep = gen.numpy.random(input._array.shape) >= p
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    return _elementwise("dropout", input, lambda a: np.where(keep, a * a.dtype.type(scale), 0), inplace)


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False):
    """``weight[input]`` (rows of ``weight`` gathered by the int64/int32 indices ``input``)."""
    if max_norm is not None:
        raise NotImplementedError("embedding: max_norm (which renormalises weight in place) is not supported")
    if input._dtype.is_floating_point:
        raise RuntimeError("Expected tensor for argument #1 'indices' to have one of the following "
                           f"scalar types: Long, Int; but got {input._dtype} instead")
    rows = index_select(weight, 0, input.reshape(-1))
    return rows.view(tuple(input._array.shape) + (weight._array.shape[1],))


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    compute = _float(input, "cross_entropy")
    c_axis = 0 if input._array.ndim == 1 else 1
    n_classes = input._array.shape[c_axis]
    probs = target._dtype.is_floating_point
    if not probs and target._dtype is not int64:
        raise RuntimeError(f"expected scalar type Long but found {target._dtype._scalar_name}")
    tensors = [input, target] + ([weight] if weight is not None else [])
    shape = () if reduction != "none" else (input._array.shape[:c_axis] + input._array.shape[c_axis + 1:])
    out = new(input, shape, input._dtype)
    eps = label_smoothing

    def fn(x, t, *w):
        x = x.astype(compute, copy=False)
        logp = x - np.max(x, axis=c_axis, keepdims=True)
        logp = logp - np.log(np.sum(np.exp(logp), axis=c_axis, keepdims=True))
        wshape = [1] * x.ndim
        wshape[c_axis] = n_classes
        wv = w[0].astype(compute).reshape(wshape) if w else np.ones(wshape, compute)
        if probs:
            q = t.astype(compute) * (1 - eps) + eps / n_classes
            loss = -np.sum(q * logp * wv, axis=c_axis)
            return loss if reduction == "none" else (np.sum(loss) / (loss.size if reduction == "mean" else 1))
        valid = t != ignore_index
        safe = np.where(valid, t, 0)
        if np.any((safe < 0) | (safe >= n_classes)):
            raise IndexError(f"Target {int(safe[(safe < 0) | (safe >= n_classes)][0])} is out of bounds.")
        picked = np.squeeze(np.take_along_axis(logp, np.expand_dims(safe, c_axis), c_axis), c_axis)
        w_t = np.squeeze(np.take_along_axis(np.broadcast_to(wv, x.shape), np.expand_dims(safe, c_axis), c_axis), c_axis)
        w_t = np.where(valid, w_t, 0)
        nll = -picked * w_t
        if eps:
            smooth = -np.sum(logp * wv, axis=c_axis) * valid
            nll = (1 - eps) * nll + eps / n_classes * smooth
        if reduction == "none":
            return nll
        if reduction == "sum":
            return np.sum(nll)
        return np.sum(nll) / np.sum(w_t)

    run("cross_entropy", tensors, [out], fn, FLOPS["cross_entropy"] * input._array.size)
    return out


NAMES = ("relu", "gelu", "silu", "sigmoid", "tanh", "softmax", "log_softmax", "layer_norm",
         "rms_norm", "linear", "dropout", "cross_entropy", "embedding")


class Functional:
    """The ``torch.nn.functional`` namespace: the functions of ``NAMES``."""


for _name in NAMES:
    setattr(Functional, _name, staticmethod(globals()[_name]))
del _name


class NN:
    """``torch.nn``: only ``functional`` (coopsim has no modules or parameters)."""

    def __init__(self):
        self.functional = Functional()
