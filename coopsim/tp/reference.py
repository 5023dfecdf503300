"""The unsplit layers in numpy (float64): what every tensor-parallel size must compute.

Shapes are Megatron's (``[s, b, h]``); weights are ``[out, in]``; ``grad`` is the gradient
of the output. Used by the tests and by ``python -m benches.tp --check``.
"""

from __future__ import annotations

import numpy as np

from coopsim.tp.functional import gelu, gelu_grad


def linear_reference(x, w, b, grad) -> dict:
    """y = x w^T + b, and the gradients of x, w and b for ``grad``."""
    x, w, grad = (np.asarray(a, np.float64) for a in (x, w, grad))
    rows, grows = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])
    out = x @ w.T + (0.0 if b is None else np.asarray(b, np.float64))
    return {"out": out, "grad_input": grad @ w, "grad_weight": grows.T @ rows,
            "grad_bias": grows.sum(0)}


def mlp_reference(x, w1, b1, w2, grad) -> dict:
    """y = gelu(x w1^T + b1) w2^T (the output bias is returned apart, as Megatron's MLP),
    and the gradients of x, w1, b1, w2 and b2 for ``grad``."""
    first = linear_reference(x, w1, b1, np.zeros(x.shape[:-1] + (w1.shape[0],)))
    h = first["out"]
    a = gelu(h)
    second = linear_reference(a, w2, None, grad)
    grad_h = second["grad_input"] * gelu_grad(h)
    back = linear_reference(x, w1, b1, grad_h)
    return {"out": second["out"], "grad_input": back["grad_input"], "grad_w1": back["grad_weight"],
            "grad_b1": back["grad_bias"], "grad_w2": second["grad_weight"],
            "grad_b2": second["grad_bias"]}
