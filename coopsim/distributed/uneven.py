"""The list forms of all_gather, reduce_scatter and all_to_all on tensors of different
sizes, as PyTorch runs them (docs/adr/0039-uneven-list-collectives.md): each is one
all-to-all with split sizes, issued through ``issue.collective``; gloo refuses the uneven
all_gather and all_to_all with its own messages."""

from __future__ import annotations

import numpy as np

from coopsim.distributed import validation as check
from coopsim.distributed.issue import caller, collective, gather_from, resolve_group, scatter_into
from coopsim.distributed.planning import UFUNCS, average
from coopsim.tensor.ops import bfloat16, round_bfloat16


def _call(rt, what, tensors, like, group):
    """``(task, state, group, member)`` of an uneven list-form call (None: not a member), its
    list checked for dtype; gloo and nccl alike take these calls."""
    task, state = caller(rt, what)
    g = resolve_group(state, group)
    if g is None:
        return None
    member = g.member(task.rank)
    if member < 0:
        check.member(g, task.rank, what)
    for t in tensors:
        check.flat(t, what)
        if t.dtype is not like.dtype:
            raise TypeError(f"{what}: every tensor of the list must be {like.dtype}, got {t.dtype}")
    return task, state, g, member


def _refuse_as_gloo(op: str, shape, lists) -> None:
    """Raise ProcessGroupGloo's error for the first tensor of ``lists`` not of ``shape``."""
    shape = tuple(shape)
    for tensors in lists:
        for i, t in enumerate(tensors):
            if tuple(t.shape) != shape:
                raise RuntimeError(f"ProcessGroupGloo::{op}: invalid tensor size at index {i} (expected "
                                   f"({', '.join(map(str, shape))}), got ({', '.join(map(str, t.shape))}))")


def all_gather(rt, tensor_list, tensor, inp, group, async_op):
    """``all_gather`` into tensors of different sizes. ProcessGroupNCCL runs it as one
    broadcast per rank, coalesced (``allgather`` when ``check_same_size`` fails): entry i gets
    rank i's input. Here it is one all-to-all in which each rank sends its input to every
    rank. gloo refuses it, with ``ProcessGroupGloo::allgather``'s message."""
    call = _call(rt, "all_gather", tensor_list, tensor, group)
    if call is None:
        return None
    task, state, g, member = call
    if state.backend_of(g, task.rank) == "gloo":
        _refuse_as_gloo("allgather", tensor.shape, [tensor_list])
    p, n = g.size, inp.size
    if len(tensor_list) == p and tensor_list[member].numel() != n:
        raise ValueError(f"all_gather: tensor_list[{member}] (this rank's entry) has "
                         f"{tensor_list[member].numel()} elements, the input {n}")
    sizes = [t.numel() for t in tensor_list]
    ins = np.empty(n * p, dtype=inp.dtype)
    outs = np.empty(sum(sizes), dtype=inp.dtype)

    def prepare():
        ins.reshape(p, n)[:] = inp

    return collective(rt, "all_gather (uneven)", group, async_op, [*tensor_list, tensor], ins, outs,
                      tensor_list, prepare=prepare, finish=scatter_into(outs, tensor_list),
                      splits=([n] * p, sizes), list_len=len(tensor_list))


def all_to_all(rt, outputs, inputs, group, async_op):
    """``all_to_all`` on tensors of different sizes. ProcessGroupNCCL's ``alltoall`` sends each
    input tensor with its own size (a split size per tensor); gloo refuses it, with
    ``ProcessGroupGloo::alltoall``'s message."""
    call = _call(rt, "all_to_all", [*outputs, *inputs], inputs[0], group)
    if call is None:
        return None
    task, state, g, _ = call
    if state.backend_of(g, task.rank) == "gloo":
        _refuse_as_gloo("alltoall", inputs[0].shape, [inputs, outputs])
    sizes_in, sizes_out = [t.numel() for t in inputs], [t.numel() for t in outputs]
    ins = np.empty(sum(sizes_in), dtype=inputs[0]._array.dtype)
    outs = np.empty(sum(sizes_out), dtype=inputs[0]._array.dtype)
    return collective(rt, "all_to_all", group, async_op, [*outputs, *inputs], ins, outs, outputs,
                      prepare=gather_from(inputs, ins), finish=scatter_into(outs, outputs),
                      splits=(sizes_in, sizes_out), list_len=len(inputs))


def reduce_scatter(rt, output, out, input_list, reduce_op, group, async_op):
    """``reduce_scatter`` from tensors of different sizes. PyTorch runs it as one reduce per
    rank, coalesced (ProcessGroupNCCL's ``reduce_scatter`` when ``check_same_size`` fails;
    gloo takes it too): rank i's output is the reduction of every rank's entry i. Here it is
    one all-to-all (entry i to rank i), then each rank reduces what it received, in rank
    order."""
    call = _call(rt, "reduce_scatter", input_list, output, group)
    if call is None:
        return None
    _, _, g, member = call
    p, m = g.size, out.size
    if len(input_list) == p and input_list[member].numel() != m:
        raise ValueError(f"reduce_scatter: input_list[{member}] (this rank's entry) has "
                         f"{input_list[member].numel()} elements, the output {m}")
    sizes = [t.numel() for t in input_list]
    ins = np.empty(sum(sizes), dtype=out.dtype)
    outs = np.empty(m * p, dtype=out.dtype)
    ufunc = UFUNCS[reduce_op]
    post = average(output.dtype, p) if reduce_op == "AVG" else None
    rounds = output.dtype is bfloat16

    def finish():
        received = outs.reshape(p, m)
        acc = received[0].copy()
        for k in range(1, p):
            ufunc(acc, received[k], out=acc)
        np.copyto(out, acc if post is None else post(acc), casting="unsafe")
        if rounds:
            round_bfloat16(out)

    return collective(rt, "reduce_scatter (uneven)", group, async_op, [output, *input_list], ins, outs,
                      [output], reduce_op, prepare=gather_from(input_list, ins), finish=finish,
                      splits=(sizes, [m] * p), list_len=len(input_list))
