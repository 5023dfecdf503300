"""``ctx.distributed``: the torch.distributed API on simulated devices and links.

The facade only: every function keeps PyTorch's name, signature and argument checks, and
hands the call to ``issue`` (collectives, p2p), ``state`` (groups, initialisation, the
monitored barrier) and ``validation``. Collectives are device work (NCCL's semantics): they
enqueue an op on the tensor's device stream and return at once (a ``Work`` with
``async_op=True``); host reads of their outputs wait for them (C8). ``barrier`` blocks the
calling rank until done; ``send``/``recv`` follow the backend (docs/adr/0015: under nccl the
current stream waits, under gloo the host). Per-spawn state lives in the spawn's slot
(``coopsim.distributed.state``).
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np

from coopsim.distributed import issue, uneven
from coopsim.distributed.diagnosis import explain_deadlock
from coopsim.distributed.leftovers import check_spawn_end
from coopsim.distributed.group import ProcessGroup
from coopsim.distributed.issue import GroupMember, Work, caller, gather_from, resolve_group, scatter_into
from coopsim.distributed.state import SLOT, DistState
from coopsim.distributed import validation as check
from coopsim.distributed.validation import DEFAULT_TIMEOUT, ReduceOp
from coopsim.distributed.backend import Backend, DeprecatedReduceOp, cuda_backend
from coopsim.distributed.objects import ObjectCollectives
from coopsim.distributed.p2p import P2POp
from coopsim.runtime.processes import PROCESS_RANKS


_DEFAULT_TIMEOUT_NS = check.timeout_ns(DEFAULT_TIMEOUT, "DEFAULT_TIMEOUT")


def _deprecated(old: str, new: str) -> None:
    """torch 2.13's FutureWarning for a renamed collective, pointing at the caller's line."""
    warnings.warn(f"`torch.distributed.{old}` is deprecated. Please use `torch.distributed.{new}` "
                  f"instead.", FutureWarning, stacklevel=3)


class _GroupNamespace:
    """``torch.distributed.group``: ``WORLD`` is the calling spawn's default group."""

    def __init__(self, rt):
        self._rt = rt

    @property
    def WORLD(self):  # noqa: N802 - torch's name
        state = self._rt.spawn_state(SLOT)
        return None if state is None else state.world


class Distributed:
    """The ``torch.distributed``-shaped namespace of a ``RuntimeContext``."""

    ReduceOp = ReduceOp
    GroupMember = GroupMember
    P2POp = P2POp
    Work = Work
    ProcessGroup = ProcessGroup

    def __init__(self, rt, ccl):
        self._rt = rt  # the runtime port
        self._ccl = ccl
        self.group = _GroupNamespace(rt)
        rt.add_deadlock_explainer(functools.partial(explain_deadlock, rt))
        rt.add_spawn_end_hooks(check=functools.partial(check_spawn_end, rt))

    # -- process groups -------------------------------------------------------------------

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        task = self._rt.current_task()
        state = self._rt.spawn_state(SLOT)
        return task is not None and state is not None and task.rank in state.initialized

    def init_process_group(self, backend=None, init_method=None, timeout=None, world_size=-1,
                           rank=-1, store=None, group_name="", pg_options=None, device_id=None):
        task, state = caller(self._rt, "init_process_group", initialized=False)
        semantics = cuda_backend(backend)  # init_method (env://, tcp://, file://) is not needed
        processes = self._rt.spawn_state(PROCESS_RANKS)
        if processes is not None:  # ranks started with ctx.multiprocessing.Process
            processes.assign(task, rank, world_size)
        spawn = self._rt.spawn
        nprocs = len(spawn.ranks)
        if world_size not in (-1, None) and world_size != nprocs:
            raise ValueError(f"init_process_group: world_size={world_size} contradicts the spawn, "
                             f"which runs {nprocs} ranks (omit world_size, or pass {nprocs})")
        if rank not in (-1, None) and rank != task.rank:
            raise ValueError(f"init_process_group: rank={rank} contradicts the spawn: this is "
                             f"rank {task.rank} (omit rank, or pass the rank spawn gave fn)")
        timeout_ns = _DEFAULT_TIMEOUT_NS if timeout is None else check.timeout_ns(timeout, "init_process_group")
        if state is None:
            state = DistState(self._rt, self._ccl, nprocs, timeout_ns)
            self._rt.set_spawn_state(SLOT, state)
        if task.rank in state.initialized:
            raise ValueError("trying to initialize the default process group twice!")
        state.initialized[task.rank] = "coopsim" if backend is None else str(backend)
        state.semantics[task.rank] = semantics

    def destroy_process_group(self, group=None) -> None:
        task, state = caller(self._rt, "destroy_process_group")
        if group is None or group is state.world:
            del state.initialized[task.rank]

    def get_rank(self, group=None) -> int:
        task, state = caller(self._rt, "get_rank")
        g = resolve_group(state, group)
        return -1 if g is None else g.member(task.rank)

    def get_world_size(self, group=None) -> int:
        task, state = caller(self._rt, "get_world_size")
        g = resolve_group(state, group)
        return -1 if g is None else g.size

    def get_backend(self, group=None) -> str:
        task, state = caller(self._rt, "get_backend")
        return state.initialized[task.rank]

    def new_group(self, ranks=None, timeout=None, backend=None, pg_options=None,
                  use_local_synchronization=False, group_desc=None):
        """Every rank calls ``new_group`` with the same ranks, in the same order (as torch)."""
        task, state = caller(self._rt, "new_group")
        semantics = None if backend is None else cuda_backend(backend)
        world = state.world.size
        members = list(range(world)) if ranks is None else list(ranks)
        if any(isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < world for r in members) \
                or len(set(members)) != len(members):
            raise ValueError(f"new_group: ranks must be distinct ints in 0..{world - 1}, got {ranks!r}")
        members = sorted(members)
        k = state.new_group_calls.get(task.rank, 0) + 1
        state.new_group_calls[task.rank] = k
        if k < len(state.groups):
            group = state.groups[k]
            if list(group.ranks) != members:
                raise ValueError(f"new_group call #{k}: rank {task.rank} passed ranks {members}, "
                                 f"but an earlier caller passed {list(group.ranks)}; every rank "
                                 f"must call new_group with the same ranks, in the same order")
        else:
            timeout_ns = check.timeout_ns(timeout, "new_group") if timeout is not None else state.world.timeout_ns
            group = ProcessGroup(k, members, timeout_ns, group_desc or f"group{k}")
            state.groups.append(group)
        if semantics is not None:
            state.group_semantics[group.gid] = semantics
        return group if group.member(task.rank) >= 0 else GroupMember.NON_GROUP_MEMBER

    # -- collectives ----------------------------------------------------------------------

    def all_reduce(self, tensor, op=ReduceOp.SUM, group=None, async_op=False):
        flat = check.inplace(tensor, "all_reduce")
        tensors = [tensor]  # read, never changed: the same list says what is written
        return issue.collective(self._rt, "all_reduce", group, async_op, tensors, flat, flat, tensors,
                                check.reduce_op_name(op, tensor))  # by position: the hot path

    def broadcast(self, tensor, src=None, group=None, async_op=False, group_src=None):
        flat = check.inplace(tensor, "broadcast")
        return issue.collective(self._rt, "broadcast", group, async_op, [tensor], flat, flat, [tensor],
                                None, (src, group_src))

    def reduce(self, tensor, dst=None, op=ReduceOp.SUM, group=None, async_op=False, group_dst=None):
        flat = check.inplace(tensor, "reduce")
        return issue.collective(self._rt, "reduce", group, async_op, [tensor], flat, flat, [tensor],
                                check.reduce_op_name(op, tensor), (dst, group_dst))

    def all_gather_single(self, output_tensor, input_tensor, group=None, async_op=False):
        out, inp = check.flat(output_tensor, "all_gather_single"), check.flat(input_tensor, "all_gather_single")
        check.same_dtype(output_tensor, input_tensor, "all_gather_single")
        return issue.collective(self._rt, "all_gather_single", group, async_op, [output_tensor, input_tensor],
                                inp, out, [output_tensor], out_multiple=True)

    def all_gather_into_tensor(self, output_tensor, input_tensor, group=None, async_op=False):
        """Deprecated in torch 2.13: ``all_gather_single`` (the same collective)."""
        _deprecated("all_gather_into_tensor", "all_gather_single")
        return self.all_gather_single(output_tensor, input_tensor, group, async_op)

    def all_gather(self, tensor_list, tensor, group=None, async_op=False):
        inp = check.flat(tensor, "all_gather")
        if check.uneven(tensor_list):
            return uneven.all_gather(self._rt, tensor_list, tensor, inp, group, async_op)
        check.tensor_list(tensor_list, tensor, "all_gather", "tensor_list")
        staging = np.empty(inp.size * len(tensor_list), dtype=inp.dtype)
        return issue.collective(self._rt, "all_gather", group, async_op, [*tensor_list, tensor], inp, staging,
                                tensor_list, finish=scatter_into(staging, tensor_list), list_len=len(tensor_list))

    def reduce_scatter_single(self, output, input, op=ReduceOp.SUM, group=None, async_op=False):
        out, inp = check.flat(output, "reduce_scatter_single"), check.flat(input, "reduce_scatter_single")
        check.same_dtype(output, input, "reduce_scatter_single")
        return issue.collective(self._rt, "reduce_scatter_single", group, async_op, [output, input], inp, out,
                                [output], reduce_op=check.reduce_op_name(op, output), in_multiple=True)

    def reduce_scatter_tensor(self, output, input, op=ReduceOp.SUM, group=None, async_op=False):
        """Deprecated in torch 2.13: ``reduce_scatter_single`` (the same collective)."""
        _deprecated("reduce_scatter_tensor", "reduce_scatter_single")
        return self.reduce_scatter_single(output, input, op, group, async_op)

    def reduce_scatter(self, output, input_list, op=ReduceOp.SUM, group=None, async_op=False):
        out = check.flat(output, "reduce_scatter")
        if check.uneven(input_list):
            return uneven.reduce_scatter(self._rt, output, out, input_list,
                                               check.reduce_op_name(op, output), group, async_op)
        check.tensor_list(input_list, output, "reduce_scatter", "input_list")
        staging = np.empty(out.size * len(input_list), dtype=out.dtype)
        return issue.collective(self._rt, "reduce_scatter", group, async_op, [output, *input_list], staging, out,
                                [output], reduce_op=check.reduce_op_name(op, output), prepare=gather_from(input_list, staging),
                                list_len=len(input_list))

    def all_to_all_single(self, output, input, output_split_sizes=None, input_split_sizes=None,
                          group=None, async_op=False):
        out, inp = check.flat(output, "all_to_all_single"), check.flat(input, "all_to_all_single")
        check.same_dtype(output, input, "all_to_all_single")
        splits = None
        if output_split_sizes is not None or input_split_sizes is not None:
            splits = (list(input_split_sizes or []), list(output_split_sizes or []))
        return issue.collective(self._rt, "all_to_all_single", group, async_op, [output, input], inp, out,
                                [output], splits=splits, in_multiple=True)

    def all_to_all(self, output_tensor_list, input_tensor_list, group=None, async_op=False):
        if not input_tensor_list or len(output_tensor_list) != len(input_tensor_list):
            raise ValueError("all_to_all: output_tensor_list and input_tensor_list must have one "
                             "tensor per rank of the group")
        first = input_tensor_list[0]
        if check.uneven([*input_tensor_list, *output_tensor_list]):
            return uneven.all_to_all(self._rt, output_tensor_list, input_tensor_list, group, async_op)
        check.tensor_list(input_tensor_list, first, "all_to_all", "input_tensor_list")
        check.tensor_list(output_tensor_list, first, "all_to_all", "output_tensor_list")
        n = first.numel() * len(input_tensor_list)
        ins = np.empty(n, dtype=first._array.dtype)
        outs = np.empty(n, dtype=first._array.dtype)
        return issue.collective(self._rt, "all_to_all", group, async_op, [*output_tensor_list, *input_tensor_list],
                                ins, outs, output_tensor_list, prepare=gather_from(input_tensor_list, ins),
                                finish=scatter_into(outs, output_tensor_list), list_len=len(input_tensor_list))

    def gather(self, tensor, gather_list=None, dst=None, group=None, async_op=False, group_dst=None):
        inp = check.flat(tensor, "gather")
        return self._rooted_list("gather", tensor, inp, gather_list, (dst, group_dst), group, async_op)

    def scatter(self, tensor, scatter_list=None, src=None, group=None, async_op=False, group_src=None):
        out = check.flat(tensor, "scatter")
        return self._rooted_list("scatter", tensor, out, scatter_list, (src, group_src), group, async_op)

    def _rooted_list(self, what, tensor, flat, tensor_list, root, group, async_op):
        task, state = caller(self._rt, what)
        g = resolve_group(state, group)
        if g is None:
            return None
        root_member = check.root_member(g, root, what)
        list_name = "gather_list" if what == "gather" else "scatter_list"
        is_root = g.member(task.rank) == root_member
        if is_root:
            if not tensor_list or len(tensor_list) != g.size:
                raise ValueError(f"Argument ``{list_name}`` must be specified on destination rank."
                                 if what == "gather" else
                                 f"Argument ``{list_name}`` must be specified on source rank.")
            check.tensor_list(tensor_list, tensor, what, list_name)
        elif tensor_list:
            raise ValueError(f"Argument ``{list_name}`` must NOT be specified on non-destination ranks."
                             if what == "gather" else
                             f"Argument ``{list_name}`` must NOT be specified on non-source ranks.")
        staging = np.empty(flat.size * g.size, dtype=flat.dtype)
        if what == "gather":
            return issue.collective(self._rt, what, group, async_op, [tensor], flat, staging,
                                    tensor_list if is_root else [],
                                    finish=scatter_into(staging, tensor_list) if is_root else None,
                                    root=root)
        return issue.collective(self._rt, what, group, async_op, [tensor], staging, flat, [tensor],
                                prepare=gather_from(tensor_list, staging) if is_root else None, root=root)

    def barrier(self, group=None, async_op=False, device_ids=None):
        """All ranks of the group arrive before any leaves (blocks the calling rank)."""
        token = np.zeros(1, dtype=np.int32)
        work = issue.collective(self._rt, "barrier", group, True, [], token, token, [], reduce_op="SUM",
                                dtype_name="int32")
        if work is None or async_op:
            return work
        work.wait()
        return None

    def monitored_barrier(self, group=None, timeout=None, wait_all_ranks=False):
        """gloo's monitored barrier: rank 0 of the group raises, naming the ranks that did not
        arrive within ``timeout`` (a real timeout: it fires even if nothing else happens)."""
        task, state = caller(self._rt, "monitored_barrier")
        g = resolve_group(state, group)
        if g is None:
            return None
        timeout_ns = check.timeout_ns(timeout, "monitored_barrier") if timeout is not None else g.timeout_ns
        return state.monitored_barrier(g, task, timeout_ns, wait_all_ranks)

    # -- point to point -------------------------------------------------------------------

    def isend(self, tensor, dst=None, group=None, tag=0, group_dst=None):
        return self._p2p("send", tensor, dst, group, tag, group_dst)

    def irecv(self, tensor, src=None, group=None, tag=0, group_src=None):
        return self._p2p("recv", tensor, src, group, tag, group_src)

    def send(self, tensor, dst=None, group=None, tag=0, group_dst=None) -> None:
        """``isend(...).wait()``: under gloo the host blocks until the peer's recv took the
        data; under nccl the current stream waits for the send (docs/adr/0015)."""
        work = self.isend(tensor, dst, group, tag, group_dst)
        if work is not None:
            work.wait()

    def recv(self, tensor, src=None, group=None, tag=0, group_src=None) -> int:
        """``irecv(...).wait()``; returns the sender's rank (with ``src=None``, gloo only:
        the host blocks until the data arrived, to know the sender)."""
        work = self.irecv(tensor, src, group, tag, group_src)
        if work is None:
            return -1
        work.wait()
        if src is not None or group_src is not None:
            return src if src is not None else work._post.peer
        return work._post.match.rank

    def batch_isend_irecv(self, p2p_op_list) -> list:
        if not p2p_op_list or not all(isinstance(p, P2POp) for p in p2p_op_list):
            raise ValueError("Invalid ``p2p_op_list``. Each op is expected to to be of type "
                             "``torch.distributed.P2POp``.")
        return issue.p2p(self._rt, [("send" if p.op.__name__ == "isend" else "recv", p.tensor, p.peer,
                                 p.group, p.tag, p.group_peer) for p in p2p_op_list], batched=True)

    def _p2p(self, kind, tensor, peer, group, tag, group_peer):
        return issue.p2p(self._rt, [(kind, tensor, peer, group, tag, group_peer)])[0]

    # -- names added for issue 9 (docs/adr/0015) -------------------------------------------

    Backend = Backend

    @property
    def reduce_op(self):
        """Deprecated alias of ``ReduceOp``; each attribute read warns as PyTorch does."""
        return DeprecatedReduceOp()

    def is_nccl_available(self) -> bool:
        return True

    def is_gloo_available(self) -> bool:
        return True

    def is_torchelastic_launched(self) -> bool:
        """As PyTorch: True iff ``TORCHELASTIC_RUN_ID`` is set (torchrun sets it)."""
        return os.getenv("TORCHELASTIC_RUN_ID") is not None

    def get_node_local_rank(self, fallback_rank: int | None = None) -> int:
        """As PyTorch: ``LOCAL_RANK`` from the environment (torchrun sets it; spawn does not),
        else ``fallback_rank``."""
        if "LOCAL_RANK" in os.environ:
            return int(os.environ["LOCAL_RANK"])
        if fallback_rank is not None:
            return int(fallback_rank)
        raise RuntimeError("LOCAL_RANK is not in the environment. Consider passing fallback_rank to allow "
                           "`get_node_local_rank` to work, assuming you are not running in a multi-device "
                           "context and want the code to run locally instead.")

    def __getattr__(self, name: str):
        """Only reached for a name the namespace lacks: say so, and where the supported ones are."""
        if name.startswith("__"):  # protocol probes (copy, pickle) expect a plain AttributeError
            raise AttributeError(name)
        raise AttributeError(f"coopsim has no torch.distributed.{name} (see docs/torch-surface.md for "
                             f"what is supported)")

    def get_process_group_ranks(self, group) -> list[int]:
        _, state = caller(self._rt, "get_process_group_ranks")
        g = resolve_group(state, group)
        if g is None:
            raise ValueError("get_process_group_ranks: the calling rank is not in that group")
        return list(g.ranks)

    def get_global_rank(self, group, group_rank: int) -> int:
        _, state = caller(self._rt, "get_global_rank")
        g = resolve_group(state, group)
        if g is state.world:
            return group_rank
        if g is None or not 0 <= group_rank < g.size:
            raise ValueError(f"Group rank {group_rank} is not part of group {group}")
        return g.ranks[group_rank]

    def get_group_rank(self, group, global_rank: int) -> int:
        _, state = caller(self._rt, "get_group_rank")
        g = resolve_group(state, group)
        if g is state.world:
            return global_rank
        if g is None or g.member(global_rank) < 0:
            raise ValueError(f"Global rank {global_rank} is not part of group {group}")
        return g.member(global_rank)

    def new_subgroups(self, group_size=None, group=None, timeout=None, backend=None, pg_options=None,
                      group_desc=None):
        """Consecutive subgroups of ``group_size`` ranks of ``group`` (default: the devices
        of a node, ``cuda.device_count()``); returns (this rank's subgroup, all of them)."""
        _, state = caller(self._rt, "new_subgroups")
        if group_size is None:
            group_size = len(self._rt.devices)
        if group_size <= 0:
            raise ValueError(f"The arg 'group_size' ({group_size}) must be positive")
        ranks = self.get_process_group_ranks(group if group is not None else state.world)
        if len(ranks) < group_size:
            raise ValueError(f"The arg 'group_size' ({group_size}) must not exceed the world size ({len(ranks)})")
        if len(ranks) % group_size:
            raise ValueError(f"The world size ({len(ranks)}) must be divisible by '{group_size=}'")
        mine, subgroups = None, []
        for i in range(0, len(ranks), group_size):
            sub = self.new_group(ranks[i:i + group_size], timeout=timeout, backend=backend,
                                 pg_options=pg_options, group_desc=group_desc)
            subgroups.append(sub)
            if sub is not GroupMember.NON_GROUP_MEMBER:
                mine = sub
        return mine, subgroups

    def all_gather_object(self, object_list, obj, group=None):
        return self._objects.all_gather_object(object_list, obj, group)

    def gather_object(self, obj, object_gather_list=None, dst=None, group=None, group_dst=None):
        return self._objects.gather_object(obj, object_gather_list, dst, group, group_dst)

    def broadcast_object_list(self, object_list, src=None, group=None, device=None, group_src=None):
        return self._objects.broadcast_object_list(object_list, src, group, device, group_src)

    def scatter_object_list(self, scatter_object_output_list, scatter_object_input_list=None, src=None,
                            group=None, group_src=None):
        return self._objects.scatter_object_list(scatter_object_output_list, scatter_object_input_list,
                                                 src, group, group_src)

    @functools.cached_property
    def _objects(self) -> ObjectCollectives:
        return ObjectCollectives(self, self._rt)
