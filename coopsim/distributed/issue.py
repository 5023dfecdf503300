"""Issuing a collective or point-to-point op from a rank: who calls, on which group, the
fingerprint and arrival, and the op on the device stream.

Invariants:
- every check happens here, at the call, before anything is registered; a call that
  raises leaves no arrival, no post and no stream op behind;
- a collective enqueues exactly one op on its device stream (``enqueue_work``), which starts
  the member's part when the stream reaches it; a batch of p2p ops is one stream op too
  (NCCL's group semantics).
"""

from __future__ import annotations

import functools

import numpy as np

from coopsim.distributed import validation as check
from coopsim.distributed.group import ProcessGroup
from coopsim.distributed.p2p import Post
from coopsim.distributed.rendezvous import Arrival
from coopsim.distributed.state import SLOT
from coopsim.distributed.tables import KIND, ROOTED
from coopsim.engine import all_of
from coopsim.tensor.ops import bfloat16, dtype_named, round_bfloat16


class _NonGroupMember:
    def __repr__(self) -> str:
        return "GroupMember.NON_GROUP_MEMBER"


class GroupMember:
    """``torch.distributed.GroupMember``: ``NON_GROUP_MEMBER`` is what ``new_group`` returns to
    a rank outside the group (``WORLD`` is ``ctx.distributed.group.WORLD``)."""

    NON_GROUP_MEMBER = _NonGroupMember()


class Work:
    """``torch.distributed.Work``: an asynchronous collective or p2p op."""

    def __init__(self, rt, handle, failure=None, post=None):
        self._rt = rt
        self._handle = handle
        self._failure = failure  # callable -> the exception that failed the op, or None
        self._post = post  # a p2p op's Post, None for a collective

    def wait(self, timeout=None) -> bool:
        """Block the calling rank until the op has completed (raises if it failed)."""
        self._rt.wait(self._handle)
        return True

    def is_completed(self) -> bool:
        return self._handle.done

    def is_success(self) -> bool:
        return self._handle.done and self.exception() is None

    def exception(self):
        return self._failure() if self._failure is not None else None


def caller(rt, what: str, initialized: bool = True):
    """``(task, state)`` of the calling rank; raises as torch does outside a rank or before
    ``init_process_group`` (``state`` is None before the spawn's first one)."""
    task = rt.current_task()
    if task is None or task.owner is not None:
        raise RuntimeError(f"torch.distributed.{what} must be called inside a rank started by "
                           f"ctx.multiprocessing.spawn")
    state = rt.spawn_state(SLOT)
    if initialized and (state is None or task.rank not in state.initialized):
        raise ValueError("Default process group has not been initialized, please make sure "
                         "to call init_process_group.")
    return task, state


def resolve_group(state, group):
    """The ProcessGroup that ``group`` names (None: WORLD), or None for NON_GROUP_MEMBER."""
    if group is None:
        return state.world
    if group is GroupMember.NON_GROUP_MEMBER:
        return None
    if not isinstance(group, ProcessGroup) or group not in state.groups:
        raise ValueError(f"group must be None, a group from new_group() or group.WORLD, got {group!r}")
    return group


def collective(rt, what, group, async_op, tensors, ins, outs, written, *, reduce_op=None,
               root=(None, None), prepare=None, finish=None, splits=None, list_len=None,
               in_multiple=False, out_multiple=False, dtype_name=None):
    """Issue collective ``what`` from the calling rank; returns a Work if ``async_op``.

    ``ins``/``outs`` are the flat buffers the schedule reads and writes; ``written`` the
    tensors whose storage the op writes (host reads wait for it, C8); ``prepare``/``finish``
    fill ``ins`` at the start and copy ``outs`` out at the member's completion.
    """
    task, state = caller(rt, what)
    g = resolve_group(state, group)
    if g is None:
        return None
    member = check.member(g, task.rank, what)
    check.own_tensors(rt, tensors, what)
    devices = {t._storage.device.index for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"{what}: all tensors must be on one device, got cuda:{sorted(devices)}")
    device = rt.devices[devices.pop()] if tensors else rt.current_device()
    if list_len is not None and list_len != g.size:
        raise ValueError(f"{what}: the tensor list must have {g.size} tensors (the group size), got {list_len}")
    if in_multiple and splits is None and ins.size % g.size:
        raise ValueError(f"{what}: input of {ins.size} elements does not divide among {g.size} ranks")
    if out_multiple and outs.size != ins.size * g.size:
        raise ValueError(f"{what}: output must have group size x input elements "
                         f"({g.size} x {ins.size}), got {outs.size}")
    root_member = check.root_member(g, root, what) if KIND[what] in ROOTED else None
    if what == "reduce_scatter_tensor" and outs.size * g.size != ins.size:
        raise ValueError(f"{what}: input must have group size x output elements "
                         f"({g.size} x {outs.size}), got {ins.size}")
    dtype = tensors[0].dtype if tensors else dtype_named(dtype_name)
    count = check.count(what, ins, outs, g.size)
    splits_in = splits_out = None
    if splits is not None:
        splits_in, splits_out = check.splits(splits, ins.size, outs.size, g.size, what)
    seq = g.next_seq(task.rank)
    fingerprint = {
        "op": what, "seq": seq,
        "shapes": None if splits is not None else [tuple(t.shape) for t in tensors],
        "dtypes": [str(t.dtype) for t in tensors] if tensors else [dtype_name],
        "reduce_op": reduce_op, "root": None if root_member is None else g.ranks[root_member],
        "splits": None,
        "count": count, "dtype_obj": dtype, "device": device.index, "root_member": root_member,
        "splits_in": splits_in, "splits_out": splits_out,
    }
    finishers = []
    if ins is not outs and outs.size and ins.size and np.shares_memory(ins, outs):
        # in-place forms (output is the input's chunk, or the input is the output's chunk):
        # the schedule writes a separate buffer, copied into the tensor when done
        target, outs = outs, np.empty_like(outs)
        finishers.append(functools.partial(np.copyto, target, outs))
    if dtype is bfloat16:
        finishers.insert(0, functools.partial(round_bfloat16, outs))
    if finish is not None:
        finishers.append(finish)
    rendezvous = g.collective(state, seq, what)
    arrival = Arrival(task, member, fingerprint, ins, outs, prepare, _chain(finishers), ins.size)
    done = rendezvous.arrive(arrival)
    pending = state.pending.setdefault(task.rank, [])
    pending.append(arrival)
    done.add_callback(lambda _h: pending.remove(arrival))
    op = device.stream.enqueue_work(("{} on dev{}", rendezvous.name, device.index),
                                    lambda: rendezvous.member_ready(member),
                                    device.kind.launch_overhead_ns)
    for t in written:
        t._storage.last_write = op
    return Work(rt, op, lambda: rendezvous.error) if async_op else None


def p2p(rt, ops) -> list:
    """Post ``ops`` (``(kind, tensor, peer, group, tag, group_peer)``, kind "send"/"recv"),
    then enqueue them as ONE stream op (NCCL's group semantics: the ops of a batch progress
    together, so a ring of send-then-receive does not deadlock). One Work (or None, for a
    rank outside the group) per op."""
    posts = [_post(rt, *op) for op in ops]
    live = [post for post in posts if post is not None]
    if not live:
        return posts
    state = rt.spawn_state(SLOT)
    device = live[0].tensor._storage.device
    if any(post.tensor._storage.device is not device for post in live):
        raise ValueError("batch_isend_irecv: all tensors must be on one device")

    def start():
        handles = [state.p2p.ready(post) for post in live]
        if len(handles) == 1:
            return handles[0]
        return all_of(rt.engine, handles, f"batch of {len(handles)} p2p ops")

    desc = live[0].describe() if len(live) == 1 else f"batch_isend_irecv of {len(live)} ops by rank {live[0].rank}"
    op = device.stream.enqueue_work(desc, start, device.kind.launch_overhead_ns)
    works = []
    for post in posts:
        if post is None:
            works.append(None)
            continue
        if post.kind == "recv":
            post.tensor._storage.last_write = op
        state.p2p.track(op, post)
        works.append(Work(rt, op, lambda post=post: post.error, post))
    return works


def _post(rt, kind, tensor, peer, group, tag, group_peer):
    what = "isend" if kind == "send" else "irecv"
    task, state = caller(rt, what)
    g = resolve_group(state, group)
    if g is None:
        return None
    check.member(g, task.rank, what)
    check.own_tensors(rt, [tensor], what)
    flat = check.flat(tensor, what)
    if group_peer is not None:
        if peer is not None:
            raise ValueError(f"{what}: pass only one of {'dst' if kind == 'send' else 'src'} and group_peer")
        peer = g.ranks[group_peer]
    if kind == "send" and peer is None:
        raise ValueError("isend: dst must be given")
    if peer is not None and g.member(peer) < 0:
        raise ValueError(f"{what}: rank {peer} is not in group {g.name} (ranks {list(g.ranks)})")
    if peer == task.rank:
        raise ValueError("Invalid destination rank: destination rank should not be the same as "
                         "the rank of the current process." if kind == "send" else
                         "Invalid source rank: source rank should not be the same as the rank "
                         "of the current process.")
    return state.p2p.post(Post(kind, task.rank, peer, g, tag, tensor, flat, task))


def _chain(calls):
    """One callable running ``calls`` in order (None if there are none)."""
    if not calls:
        return None
    if len(calls) == 1:
        return calls[0]
    return lambda: [call() for call in calls] and None


def gather_from(tensors, staging):
    """Copy the tensors' data into ``staging`` (at the collective's start)."""
    def prepare():
        off = 0
        for t in tensors:
            n = t.numel()
            staging[off:off + n] = t._array.reshape(-1)
            off += n
    return prepare


def scatter_into(staging, tensors):
    """Copy ``staging`` into the tensors (at the member's completion)."""
    def finish():
        off = 0
        for t in tensors:
            n = t.numel()
            t._array.reshape(-1)[:] = staging[off:off + n]
            off += n
    return finish
