"""Megatron's region mappings (``megatron/core/tensor_parallel/mappings.py``), each with its
forward and its backward, over the caller's tensor model parallel group.

coopsim has no autograd: a mapping is a ``Mapping`` object; ``m(ctx, x)`` runs its forward
and ``m.backward(ctx, grad)`` its backward (the conjugate collective), exactly as Megatron's
autograd functions do:

==========================================  ==========================  =========================
mapping                                     forward                     backward
==========================================  ==========================  =========================
copy_to_tensor_model_parallel_region        identity                    all_reduce
reduce_from_tensor_model_parallel_region    all_reduce (in place)       identity
scatter_to_tensor_model_parallel_region     keep own last-dim chunk     all_gather, last dim
gather_from_tensor_model_parallel_region    all_gather, last dim        keep own last-dim chunk
scatter_to_sequence_parallel_region         keep own first-dim chunk    all_gather, first dim
gather_from_sequence_parallel_region        all_gather, first dim       reduce_scatter, first dim
                                                                        (split if not
                                                                        tensor_parallel_output_grad)
reduce_scatter_to_sequence_parallel_region  reduce_scatter, first dim   all_gather, first dim
==========================================  ==========================  =========================

With one rank in the group every mapping is the identity and issues nothing (as Megatron).
Gathers use ``all_gather_single`` and reduce-scatters ``reduce_scatter_single`` into a
fresh ``empty`` buffer; a gather along the last dim gathers along the first, then
concatenates the chunks along the last (Megatron's ``_gather_along_last_dim``); a split keeps
a ``contiguous()`` copy of the rank's chunk, a first-dim chunk being contiguous already.
"""

from __future__ import annotations

from coopsim.tp import parallel_state as ps
from coopsim.tp.functional import cat_last


def _world_rank_group(ctx):
    return (ps.get_tensor_model_parallel_world_size(ctx), ps.get_tensor_model_parallel_rank(ctx),
            ps.get_tensor_model_parallel_group(ctx))


def divide(numerator: int, denominator: int, what: str = "size") -> int:
    """``numerator / denominator``, which must be exact (Megatron's ``divide``)."""
    if numerator % denominator:
        raise ValueError(f"{what} {numerator} is not divisible by {denominator} (the tensor "
                         f"model parallel size)")
    return numerator // denominator


def identity(ctx, x, **_):
    return x


def all_reduce(ctx, x, async_op: bool = False, **_):
    """``x`` summed over the group, in place (returns ``x``; with ``async_op``, ``(x, work)``)."""
    world, _rank, group = _world_rank_group(ctx)
    work = None
    if world > 1:
        work = ctx.distributed.all_reduce(x, group=group, async_op=async_op)
    return (x, work) if async_op else x


def split_last_dim(ctx, x, **_):
    world, rank, _group = _world_rank_group(ctx)
    if world == 1:
        return x
    n = divide(x.shape[-1], world, "the last dim")
    return x[..., rank * n:(rank + 1) * n].contiguous()


def split_first_dim(ctx, x, **_):
    world, rank, _group = _world_rank_group(ctx)
    if world == 1:
        return x
    n = divide(x.shape[0], world, "the first dim")
    return x[rank * n:(rank + 1) * n].contiguous()


def all_gather_first_dim(ctx, x, async_op: bool = False, **_):
    """The group's ``x`` stacked along dim 0 (with ``async_op``, ``(out, work)``)."""
    world, _rank, group = _world_rank_group(ctx)
    if world == 1:
        return (x, None) if async_op else x
    out = ctx.empty((x.shape[0] * world,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    work = ctx.distributed.all_gather_single(out, x.contiguous(), group=group, async_op=async_op)
    return (out, work) if async_op else out


def all_gather_last_dim(ctx, x, **_):
    world, _rank, _group = _world_rank_group(ctx)
    if world == 1:
        return x
    stacked = all_gather_first_dim(ctx, x)
    n = x.shape[0]
    return cat_last(ctx, [stacked[i * n:(i + 1) * n] for i in range(world)])


def reduce_scatter_first_dim(ctx, x, async_op: bool = False, **_):
    """The sum over the group of ``x``, of which this rank keeps its chunk along dim 0."""
    world, _rank, group = _world_rank_group(ctx)
    if world == 1:
        return (x, None) if async_op else x
    n = divide(x.shape[0], world, "the first dim")
    out = ctx.empty((n,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    work = ctx.distributed.reduce_scatter_single(out, x.contiguous(), group=group, async_op=async_op)
    return (out, work) if async_op else out


def _gather_from_sp_backward(ctx, grad, tensor_parallel_output_grad: bool = True, **_):
    if tensor_parallel_output_grad:
        return reduce_scatter_first_dim(ctx, grad)
    return split_first_dim(ctx, grad)


class Mapping:
    """One of Megatron's region mappings: ``m(ctx, x, **options)`` is its forward,
    ``m.backward(ctx, grad, **options)`` its backward."""

    def __init__(self, name: str, forward, backward):
        self.name = name
        self.forward = forward
        self.backward = backward

    def __call__(self, ctx, x, **options):
        return self.forward(ctx, x, **options)

    def __repr__(self) -> str:
        return f"<mapping {self.name}>"


copy_to_tensor_model_parallel_region = Mapping(
    "copy_to_tensor_model_parallel_region", identity, all_reduce)
reduce_from_tensor_model_parallel_region = Mapping(
    "reduce_from_tensor_model_parallel_region", all_reduce, identity)
scatter_to_tensor_model_parallel_region = Mapping(
    "scatter_to_tensor_model_parallel_region", split_last_dim, all_gather_last_dim)
gather_from_tensor_model_parallel_region = Mapping(
    "gather_from_tensor_model_parallel_region", all_gather_last_dim, split_last_dim)
scatter_to_sequence_parallel_region = Mapping(
    "scatter_to_sequence_parallel_region", split_first_dim, all_gather_first_dim)
gather_from_sequence_parallel_region = Mapping(
    "gather_from_sequence_parallel_region", all_gather_first_dim, _gather_from_sp_backward)
reduce_scatter_to_sequence_parallel_region = Mapping(
    "reduce_scatter_to_sequence_parallel_region", reduce_scatter_first_dim, all_gather_first_dim)
