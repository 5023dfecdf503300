"""Megatron-Core's ``parallel_state``: the tensor, pipeline, data and context parallel groups.

Names, defaults and rank order are Megatron-Core's (``megatron/core/parallel_state.py``:
``initialize_model_parallel`` and its ``RankGenerator`` with ``order="tp-cp-ep-dp-pp"``):
global rank = tp_rank + tp * (cp_rank + cp * (dp_rank + dp * pp_rank)) for the default
order, so with (TP, PP, DP) = (2, 2, 2) on 8 ranks the TP groups are [0,1] [2,3] [4,5] [6,7],
the DP groups [0,2] [1,3] [4,6] [5,7] and the PP groups [0,4] [1,5] [2,6] [3,7].

The one difference (docs/adr/0021-tensor-parallel-layers.md): every function takes the
context as its first argument (``initialize_model_parallel(ctx, 2, 2)``), because the state
is per spawn and per rank, on the runtime (``ctx.sim.runtime.spawn_state``), never in module
globals: two contexts, or two spawns, never see each other's groups.

Groups are named after their kind and index among the groups of that kind (``tp[1]``,
``dp[0]``, ``pp[3]``, ``cp[2]``, ``mp[0]``, ``dp-cp[0]``), so reports say "all_reduce #3 on
group tp[1]".
"""

from __future__ import annotations

import datetime

SLOT = "tp.parallel_state"
_DIMS = ("tp", "cp", "ep", "dp", "pp")


class _RankState:
    """One rank's groups: ``groups[kind]`` is its group of that kind, ``ranks[kind]`` the
    global ranks of that group (in group-rank order)."""

    def __init__(self, sizes: dict, groups: dict, ranks: dict, virtual_pp_size):
        self.sizes = sizes
        self.groups = groups
        self.ranks = ranks
        self.virtual_pp_size = virtual_pp_size


def rank_groups(order: str, sizes: dict, kind: str) -> list[list[int]]:
    """Megatron's masked orthogonal rank groups: the groups of ``kind`` (dims joined by
    ``-``, e.g. ``"tp-pp"``) when the dims of ``order`` have ``sizes``. Within a group the
    ranks vary over ``kind``'s dims (the first one fastest); groups are listed by the other
    dims' coordinates (the first one fastest)."""
    dims = order.split("-")
    strides, stride = {}, 1
    for d in dims:
        strides[d] = stride
        stride *= sizes[d]
    inside = [d for d in dims if d in kind.split("-")]
    outside = [d for d in dims if d not in inside]

    def offsets(names):
        out = [0]
        for d in names:  # the first name varies fastest
            out = [o + i * strides[d] for i in range(sizes[d]) for o in out]
        return out

    return [[base + o for o in offsets(inside)] for base in offsets(outside)]


def _rank_of(ctx) -> int:
    return ctx.distributed.get_rank()


def _table(ctx, create: bool = False):
    rt = ctx.sim.runtime
    table = rt.spawn_state(SLOT)
    if table is None and create:
        table = {}
        rt.set_spawn_state(SLOT, table)
    return table


def _state(ctx, what: str) -> _RankState:
    table = _table(ctx)
    state = None if table is None else table.get(_rank_of(ctx))
    if state is None:
        raise RuntimeError(f"{what}: the model parallel groups are not initialized on this rank; "
                           f"call coopsim.tp.parallel_state.initialize_model_parallel(ctx, ...) first")
    return state


def initialize_model_parallel(ctx, tensor_model_parallel_size: int = 1,
                              pipeline_model_parallel_size: int = 1,
                              virtual_pipeline_model_parallel_size=None,
                              pipeline_model_parallel_split_rank=None, use_sharp: bool = False,
                              context_parallel_size: int = 1, expert_model_parallel_size: int = 1,
                              nccl_communicator_config_path=None,
                              distributed_timeout_minutes: int = 30,
                              order: str = "tp-cp-ep-dp-pp") -> None:
    """Build the groups on every rank (a collective call: every rank calls it, in the same
    order, after ``init_process_group``). Data parallel size = world / (tp * pp * cp)."""
    if expert_model_parallel_size != 1 or pipeline_model_parallel_split_rank is not None:
        raise NotImplementedError("initialize_model_parallel: expert parallelism and "
                                  "pipeline_model_parallel_split_rank are not modelled")
    if sorted(order.split("-")) != sorted(_DIMS):
        raise RuntimeError(f"initialize_model_parallel: order must name each of "
                           f"{', '.join(_DIMS)} once, joined by '-', got {order!r}")
    world = ctx.distributed.get_world_size()
    tp, pp, cp = tensor_model_parallel_size, pipeline_model_parallel_size, context_parallel_size
    for name, value in (("tensor_model_parallel_size", tp), ("pipeline_model_parallel_size", pp),
                        ("context_parallel_size", cp)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"initialize_model_parallel: {name} must be an int >= 1, got {value!r}")
    if world % (tp * pp * cp):
        raise RuntimeError(f"world_size ({world}) is not divisible by tensor_model_parallel_size "
                           f"({tp}) x pipeline_model_parallel_size ({pp}) x context_parallel_size ({cp})")
    table = _table(ctx, create=True)
    rank = _rank_of(ctx)
    if rank in table:
        raise RuntimeError("initialize_model_parallel: the model parallel groups are already "
                           "initialized on this rank (call destroy_model_parallel first)")
    sizes = {"tp": tp, "cp": cp, "ep": 1, "dp": world // (tp * pp * cp), "pp": pp}
    timeout = datetime.timedelta(minutes=distributed_timeout_minutes)
    groups, ranks = {}, {}
    # every rank creates every group, in this order (new_group is collective, as torch's)
    for kind in ("dp", "dp-cp", "cp", "tp-pp", "tp", "pp"):
        label = "mp" if kind == "tp-pp" else kind
        for index, members in enumerate(rank_groups(order, sizes, kind)):
            group = ctx.distributed.new_group(members, timeout=timeout,
                                              group_desc=f"{label}[{index}]")
            if rank in members:
                groups[label], ranks[label] = group, members
    table[rank] = _RankState(sizes, groups, ranks, virtual_pipeline_model_parallel_size)


def model_parallel_is_initialized(ctx) -> bool:
    table = _table(ctx)
    return table is not None and _rank_of(ctx) in table


def destroy_model_parallel(ctx) -> None:
    """Forget this rank's groups (the process groups themselves stay, as in Megatron)."""
    table = _table(ctx)
    if table is not None:
        table.pop(_rank_of(ctx), None)


def _group(ctx, kind: str, what: str):
    return _state(ctx, what).groups[kind]


def _rank_in(ctx, kind: str, what: str) -> int:
    return _state(ctx, what).ranks[kind].index(_rank_of(ctx))


def _size(ctx, kind: str, what: str) -> int:
    return len(_state(ctx, what).ranks[kind])


def get_model_parallel_group(ctx):
    return _group(ctx, "mp", "get_model_parallel_group")


def get_tensor_model_parallel_group(ctx):
    return _group(ctx, "tp", "get_tensor_model_parallel_group")


def get_tensor_model_parallel_rank(ctx) -> int:
    return _rank_in(ctx, "tp", "get_tensor_model_parallel_rank")


def get_tensor_model_parallel_world_size(ctx) -> int:
    return _size(ctx, "tp", "get_tensor_model_parallel_world_size")


def get_tensor_model_parallel_src_rank(ctx) -> int:
    """The global rank of member 0 of the caller's tensor model parallel group."""
    return _state(ctx, "get_tensor_model_parallel_src_rank").ranks["tp"][0]


def get_pipeline_model_parallel_group(ctx):
    return _group(ctx, "pp", "get_pipeline_model_parallel_group")


def get_pipeline_model_parallel_rank(ctx) -> int:
    return _rank_in(ctx, "pp", "get_pipeline_model_parallel_rank")


def get_pipeline_model_parallel_world_size(ctx) -> int:
    return _size(ctx, "pp", "get_pipeline_model_parallel_world_size")


def get_pipeline_model_parallel_first_rank(ctx) -> int:
    return _state(ctx, "get_pipeline_model_parallel_first_rank").ranks["pp"][0]


def get_pipeline_model_parallel_last_rank(ctx) -> int:
    return _state(ctx, "get_pipeline_model_parallel_last_rank").ranks["pp"][-1]


def get_pipeline_model_parallel_next_rank(ctx) -> int:
    ranks = _state(ctx, "get_pipeline_model_parallel_next_rank").ranks["pp"]
    return ranks[(ranks.index(_rank_of(ctx)) + 1) % len(ranks)]


def get_pipeline_model_parallel_prev_rank(ctx) -> int:
    ranks = _state(ctx, "get_pipeline_model_parallel_prev_rank").ranks["pp"]
    return ranks[(ranks.index(_rank_of(ctx)) - 1) % len(ranks)]


def is_pipeline_first_stage(ctx, ignore_virtual: bool = False) -> bool:
    """First pipeline stage (virtual pipelining is not modelled: ``ignore_virtual`` is moot)."""
    return get_pipeline_model_parallel_rank(ctx) == 0


def is_pipeline_last_stage(ctx, ignore_virtual: bool = False) -> bool:
    return get_pipeline_model_parallel_rank(ctx) == get_pipeline_model_parallel_world_size(ctx) - 1


def get_data_parallel_group(ctx, with_context_parallel: bool = False):
    return _group(ctx, "dp-cp" if with_context_parallel else "dp", "get_data_parallel_group")


def get_data_parallel_rank(ctx, with_context_parallel: bool = False) -> int:
    return _rank_in(ctx, "dp-cp" if with_context_parallel else "dp", "get_data_parallel_rank")


def get_data_parallel_world_size(ctx, with_context_parallel: bool = False) -> int:
    return _size(ctx, "dp-cp" if with_context_parallel else "dp", "get_data_parallel_world_size")


def get_context_parallel_group(ctx):
    return _group(ctx, "cp", "get_context_parallel_group")


def get_context_parallel_rank(ctx) -> int:
    return _rank_in(ctx, "cp", "get_context_parallel_rank")


def get_context_parallel_world_size(ctx) -> int:
    return _size(ctx, "cp", "get_context_parallel_world_size")


def get_virtual_pipeline_model_parallel_world_size(ctx):
    return _state(ctx, "get_virtual_pipeline_model_parallel_world_size").virtual_pp_size

