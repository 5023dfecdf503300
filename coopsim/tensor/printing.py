"""How a tensor prints: ``repr(t)`` and ``str(t)`` as PyTorch's default print options give
them (``torch/_tensor_str.py``: precision 4, threshold 1000, edgeitems 3, linewidth 80), so
that a program prints the same text on coopsim as on a GPU.

The rules, as torch applies them:
- floats: one format for the whole tensor, chosen from its nonzero finite values: integral
  values print as ``1.``; scientific (``1.0000e-05``) when max/min > 1000, max > 1e8 or
  min < 1e-4; otherwise four decimals. Every element is right-aligned to the widest;
- integers and bools print as Python prints them, right-aligned;
- more than 1000 elements: only the first and last 3 along each dimension, with ``...``;
- lines wrap at 80 columns; nested dimensions are separated by ``dim - 1`` newlines;
- suffixes: ``device='cuda:i'`` for a device tensor, ``dtype=`` unless the dtype is the
  default float dtype, int64 or bool, ``size=`` for an empty tensor that is not 1-D,
  ``requires_grad=True``.
"""

from __future__ import annotations

import math

import numpy as np

PRECISION = 4
THRESHOLD = 1000
EDGEITEMS = 3
LINEWIDTH = 80


class _Format:
    """The format of one tensor's elements (``values``: the ones that will print)."""

    def __init__(self, values: np.ndarray, floating: bool):
        self.floating = floating
        self.int_mode = True
        self.sci_mode = False
        self.width = 1
        flat = values.reshape(-1)
        if not floating:
            self.width = max([1, *(len(str(v)) for v in flat.tolist())])
            return
        wide = flat.astype(np.float64)
        shown = wide[np.isfinite(wide) & (wide != 0)]
        if shown.size == 0:
            return
        magnitude = np.abs(shown)
        low, high = float(magnitude.min()), float(magnitude.max())
        self.int_mode = bool(np.all(shown == np.ceil(shown)))
        self.sci_mode = high / low > 1000.0 or high > 1.0e8 or low < 1.0e-4
        if self.sci_mode:
            self.width = max(len(f"{v:.{PRECISION}e}") for v in shown.tolist())
        elif self.int_mode:
            self.width = max(len(f"{v:.0f}") + 1 for v in shown.tolist())
        else:
            self.width = max(len(f"{v:.{PRECISION}f}") for v in shown.tolist())

    def __call__(self, value) -> str:
        if not self.floating:
            text = str(value)
        elif self.sci_mode:
            text = f"{value:{self.width}.{PRECISION}e}"
        elif self.int_mode:
            text = f"{value:.0f}" + ("" if math.isinf(value) or math.isnan(value) else ".")
        else:
            text = f"{value:.{PRECISION}f}"
        return " " * (self.width - len(text)) + text


def _edges(a: np.ndarray) -> np.ndarray:
    """The elements a summarized tensor prints: the first and last ``EDGEITEMS`` of each dim."""
    for axis in range(a.ndim):
        if a.shape[axis] > 2 * EDGEITEMS:
            keep = [*range(EDGEITEMS), *range(a.shape[axis] - EDGEITEMS, a.shape[axis])]
            a = np.take(a, keep, axis=axis)
    return a


def _body(a: np.ndarray, indent: int, summarize: bool, fmt: _Format) -> str:
    if a.ndim == 0:
        return fmt(a.item())
    cut = summarize and a.shape[0] > 2 * EDGEITEMS
    if a.ndim == 1:
        items = a.tolist()
        if cut:
            data = [*map(fmt, items[:EDGEITEMS]), " ...", *map(fmt, items[-EDGEITEMS:])]
        else:
            data = [fmt(v) for v in items]
        per_line = max(1, (LINEWIDTH - indent) // (fmt.width + 2))
        lines = [", ".join(data[i:i + per_line]) for i in range(0, len(data), per_line)]
        return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
    rows = [*range(EDGEITEMS), None, *range(a.shape[0] - EDGEITEMS, a.shape[0])] if cut else range(a.shape[0])
    parts = ["..." if i is None else _body(a[i], indent + 1, summarize, fmt) for i in rows]
    return "[" + ("," + "\n" * (a.ndim - 1) + " " * (indent + 1)).join(parts) + "]"


def tensor_repr(values: np.ndarray, *, floating: bool, device: str | None, dtype_name: str,
                plain_dtype: bool, default_float: bool, requires_grad: bool = False) -> str:
    """``repr`` of a tensor holding ``values`` (its data, read). ``device``: None for a host
    tensor; ``plain_dtype``: the dtype goes unsaid (the default float dtype, int64 or bool);
    ``default_float``: it is the default float dtype (an empty tensor names any other)."""
    prefix = "tensor("
    indent = len(prefix)
    suffixes = [] if device is None else [f"device='{device}'"]
    if values.size == 0:
        if values.ndim != 1:
            suffixes.append(f"size={tuple(values.shape)}")
        if not default_float:
            suffixes.append(f"dtype={dtype_name}")
        body = "[]"
    else:
        if not plain_dtype:
            suffixes.append(f"dtype={dtype_name}")
        summarize = values.size > THRESHOLD
        fmt = _Format(_edges(values) if summarize else values, floating)
        body = _body(values, indent, summarize, fmt)
    if requires_grad:
        suffixes.append("requires_grad=True")
    text = prefix + body
    last = len(text) - text.rfind("\n") + 1
    out = [text]
    for suffix in suffixes:
        if last + len(suffix) + 2 > LINEWIDTH:
            out.append(",\n" + " " * indent + suffix)
            last = indent + len(suffix)
        else:
            out.append(", " + suffix)
            last += len(suffix) + 2
    return "".join(out) + ")"
