"""NCCL's out-of-place collectives, which torch.distributed has no call for: the
nccl-tests-style benches time both placements (docs/adr/0010)."""

from __future__ import annotations

from coopsim.distributed import issue
from coopsim.distributed import validation as check
from coopsim.distributed.validation import ReduceOp


def out_of_place(dist, kind: str, output, input, *, op=ReduceOp.SUM, root=None):
    """NCCL's out-of-place ``all_reduce``, ``broadcast`` and ``reduce`` (distinct send and
    receive buffers), which torch.distributed has no call for; returns the ``Work``.

    ``dist`` is a context's ``distributed`` namespace, ``root`` the global rank of the
    source or destination for ``broadcast``/``reduce``. The schedules work in the output
    buffer, so the input is staged into it when the collective starts, at no cost (NCCL's
    first step reads the send buffer directly).
    """
    if kind not in ("all_reduce", "broadcast", "reduce"):
        raise ValueError(f"out_of_place: kind must be all_reduce, broadcast or reduce, got {kind!r}")
    ins, outs = check.flat(input, kind), check.flat(output, kind)
    check.same_dtype(output, input, kind)

    def stage():
        outs[:] = ins

    reduce_op = check.reduce_op_name(op, output) if kind != "broadcast" else None
    return issue.collective(dist._rt, kind, None, True, [output, input], ins, outs, [output], reduce_op=reduce_op,
                            root=(root, None) if kind != "all_reduce" else (None, None), prepare=stage)


