"""The reference all-reduce of one element per rank (ADR-0037): the analytic model's numbers of
a tiny all-reduce in three numpy calls instead of 2p.

Invariant: every bit written is the one ``op(acc, x, out=acc)`` in rank order writes
(``execution.reference``'s loop); where that cannot be shown (a NaN result) nothing is
written and the caller runs the loop.
"""

from __future__ import annotations

import numpy as np


def one_element_all_reduce(op, ins, outs, post) -> bool:
    """An all-reduce of one element per rank in three numpy calls instead of 2p: the inputs
    side by side, ``op.accumulate`` over them (its last element is the left fold in rank
    order, the same operations in the same order as ``op(acc, x, out=acc)``), written out as
    one scalar per rank. False (nothing written) when the result is NaN: then the fold's NaN
    may carry another sign or payload than the elementwise loop's (IEEE 754 leaves which of
    two NaN operands propagates open, and numpy's two loops choose differently for ``add``);
    without a NaN in the result no operation met one, so every bit is the loop's."""
    stacked = np.concatenate(ins)
    acc = op.accumulate(stacked, dtype=stacked.dtype)[-1:]
    value = acc[0]
    if value != value:  # NaN
        return False
    if post is not None:
        value = post(acc)[0]
    for out in outs:
        out[0] = value
    return True
