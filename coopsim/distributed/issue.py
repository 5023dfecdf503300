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
import sys

import numpy as np

from coopsim.distributed import validation as check
from coopsim.distributed.group import ProcessGroup
from coopsim.distributed.p2p import Post
from coopsim.distributed.rendezvous import new_arrival, new_fingerprint
from coopsim.distributed.state import SLOT
from coopsim.distributed.tables import IN_PLACE, KIND, ROOTED
from coopsim.engine import Handle, all_of
from coopsim.runtime.frames import user_site
from coopsim.tensor.ops import TimingOnlyStorage, bfloat16, dtype_named, round_bfloat16, timing_only
from coopsim.tensor.streams import current_stream


class _NonGroupMember:
    def __repr__(self) -> str:
        return "GroupMember.NON_GROUP_MEMBER"


class GroupMember:
    """``torch.distributed.GroupMember``: ``NON_GROUP_MEMBER`` is what ``new_group`` returns to
    a rank outside the group (``WORLD`` is ``ctx.distributed.group.WORLD``)."""

    NON_GROUP_MEMBER = _NonGroupMember()


class Work:
    """``torch.distributed.Work``: an asynchronous collective or p2p op."""

    def __init__(self, rt, handle, failure=None, post=None, stream_of=None, outputs=None):
        self._rt = rt
        self._outputs = outputs if outputs is not None else ([post.tensor] if post is not None else [])
        self._handle = handle
        self._failure = failure  # callable -> the exception that failed the op, or None
        self._post = post  # a p2p op's Post, None for a collective
        self._stream_of = stream_of  # nccl: the device whose current stream wait() blocks

    def wait(self, timeout=None) -> bool:
        """Block until the op has completed. An nccl op (p2p, or a collective other than
        ``barrier``) blocks the device's current stream instead of the host (``WorkNCCL::wait``
        -> ``synchronizeStream``), unless a timeout is given (then it blocks the host too, as
        there); an nccl barrier's Work blocks the host (its ``barrierTensor_`` makes ``wait``
        synchronize the current stream, torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp)."""
        device = self._stream_of
        if device is not None and timeout is None:
            current_stream(self._rt, device).wait_for(
                self._handle, ("current stream waits for {}", self._handle.desc))
            return True
        self._rt.wait(self._handle)
        return True

    def is_completed(self) -> bool:
        return self._handle.done

    def is_success(self) -> bool:
        return self._handle.done and self.exception() is None

    def exception(self):
        return self._failure() if self._failure is not None else None

    def get_future(self) -> "Future":
        """A ``torch.futures.Future`` completed with the op; its value is the op's output
        tensors (a p2p op's tensor)."""
        return Future(self._rt, self._handle, lambda: self._outputs, self)


class Future:
    """``torch.futures.Future`` of a Work: ``wait()``, ``value()``, ``done()``, ``then(fn)``.

    ``then`` callbacks run when the op completes, inside the simulation's step: they must not
    block (no host reads of unfinished tensors, no waits), as a CUDA future's callbacks must not.
    """

    def __init__(self, rt, handle, value, work=None):
        self._rt = rt
        self._handle = handle
        self._value = value  # callable -> the value, once done
        self._work = work

    def done(self) -> bool:
        return self._handle.done

    def wait(self):
        if self._work is not None:
            self._work.wait()
        else:
            self._rt.wait(self._handle)
        return self.value()

    def value(self):
        error = self._work.exception() if self._work is not None else None
        if error is not None:
            raise error
        return self._value()

    def then(self, callback) -> "Future":
        result: list = []
        chained = Handle(f"then() of {self._handle.desc}")
        engine = self._rt.engine

        def run(_h=None):
            result.append(callback(self))
            engine.schedule(chained, engine.now_ns)

        if self._handle.done:
            run()
        else:
            self._handle.add_callback(run)
        return Future(self._rt, chained, lambda: result[0])


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


def collective(rt, what, group, async_op, tensors, ins, outs, written, reduce_op=None,
               root=(None, None), *, prepare=None, finish=None, splits=None, list_len=None,
               in_multiple=False, out_multiple=False, dtype_name=None):
    """Issue collective ``what`` from the calling rank; returns a Work if ``async_op``.

    ``ins``/``outs`` are the flat buffers the schedule reads and writes; ``written`` the
    tensors whose storage the op writes (host reads wait for it, C8); ``prepare``/``finish``
    fill ``ins`` at the start and copy ``outs`` out at the member's completion.

    The hot path (one all_reduce is a few µs of Python): checks of what the common call does
    not pass are skipped, the fingerprint is one tuple, the user's call site is kept raw,
    and no closure is made per call. The in-place calls pass ``reduce_op`` and ``root``
    by position: a keyword call of a function with keyword-only parameters costs more than
    half a µs in CPython 3.11 (ADR-0033). Called from coopsim's own code only (the
    facade, ``api.py``, or its helpers here): the user's frames start above its caller. Per
    member, the group's stream is found without a name while device and backend stay
    (``ProcessGroup.lanes``, ADR-0037).
    """
    task = rt.current_task()
    state = rt.spawn_state(SLOT)
    if task is None or task.owner is not None or state is None or task.rank not in state.initialized:
        task, state = caller(rt, what)  # raises
    if rt.before_collective:
        for hook in rt.before_collective:  # fault injection (coopsim.testing): may wait or kill the rank
            hook(what, task)
    g = state.world if group is None else resolve_group(state, group)
    if g is None:
        return None
    rank = task.rank
    member = g.member(rank)
    if member < 0:
        check.member(g, rank, what)  # raises
    if len(tensors) == 1:  # the common call: one tensor gives the device, no set, no loop
        t = tensors[0]
        storage, dtype = t._storage, t._dtype
        device = rt.devices[storage.device.index] if storage.rt is rt else check.device_of(rt, tensors, what)
        hollow = type(storage) is TimingOnlyStorage
        shapes, dtypes = (t._array.shape,), (dtype,)
    else:
        device = check.device_of(rt, tensors, what)
        dtype = tensors[0]._dtype if tensors else dtype_named(dtype_name)
        hollow = bool(tensors) and timing_only(tensors[0])
        shapes = tuple([t._array.shape for t in tensors])
        dtypes = tuple([t.dtype for t in tensors]) if tensors else (dtype_name,)
    p = g.size
    if list_len is not None or in_multiple or out_multiple:
        check.sizes(what, p, ins, outs, list_len, in_multiple, out_multiple, splits is not None)
    kind = KIND[what]
    root_member = check.root_member(g, root, what) if kind in ROOTED else None
    count = ins.size if kind in IN_PLACE else check.count(what, ins, outs, p)
    splits_in = splits_out = None
    if splits is not None:
        splits_in, splits_out = check.splits(splits, ins.size, outs.size, p, what)
    seq = g.next_seq(member)
    fingerprint = new_fingerprint(
        (what, seq, None if splits is not None else shapes, dtypes, reduce_op,
         None if root_member is None else g.ranks[root_member]),
        count, dtype, device.index, root_member, splits_in, splits_out)
    if hollow:  # no data to stage or copy: the schedule runs for its time only (ADR-0020)
        prepare = finish = None
    elif kind == "reduce" and member != root_member:
        # only dst receives the result (ncclReduce writes the root's buffer only): the others'
        # partial sums go to a scratch copy of the input, made when the op starts
        outs = np.empty_like(ins)
        prepare = _chain([prepare, functools.partial(np.copyto, outs, ins)])
    elif ins is not outs and outs.size and ins.size and np.shares_memory(ins, outs):
        # in-place forms (output is the input's chunk, or the input is the output's chunk):
        # the schedule writes a separate buffer, copied into the tensor when done
        target, outs = outs, np.empty_like(outs)
        finish = _chain([functools.partial(np.copyto, target, outs), finish])
    if dtype is bfloat16 and not hollow:
        finish = _chain([functools.partial(round_bfloat16, outs), finish])
    # coopsim's own code calls this (the facade, api.py, or a helper of it here): the user's
    # frames start above the caller, and ``_getframe(2)`` makes no frame object for its frame
    site = user_site(sys._getframe(2), state.user_files)
    numel = ins.size
    arrival = new_arrival(task, member, fingerprint, ins, outs, prepare, finish, numel, hollow, site)
    rendezvous = g.collective(state, seq, what)
    op = rendezvous.arrive(arrival)  # the member's part, which is also its stream op (ADR-0033)
    state.track(rank, arrival)
    backend = state.backend_of(g, rank)
    gloo = backend == "gloo"
    current = device.stream if not device.side_streams else current_stream(rt, device)  # its common case inline
    # the group's own stream, after the caller's current stream's work (a gloo barrier has no
    # tensor: it waits for no device work), as ProcessGroupNCCL's syncStream does (docs/adr/0015);
    # the member's last one while device and backend are the same (ADR-0037)
    lane = g.lanes[member]
    if lane is None or lane[0] is not device or lane[1] != backend:
        lane = g.lanes[member] = (device, backend, device.named_stream(f"{backend} {g.name}"))
    stream = lane[2]
    last = current.last  # ``_after``, inlined: the hot path
    deps = () if last is None or last.done or last is stream.last or not (tensors or not gloo) else (last,)
    stream.enqueue_work(None, op.start, device.kind.launch_overhead_ns, deps, op)
    for t in written:
        t._storage.last_write = op
    if rt.comm_hooks:
        for hook in rt.comm_hooks:  # the flight recorder (coopsim.testing)
            hook(task, g, seq, what, numel, outs.size, dtype, op, None, site)
    if not async_op:
        if gloo:
            rt.wait(op)  # gloo's work.wait() blocks the host (ProcessGroupGloo AsyncWork), docs/adr/0015
        else:  # nccl: the current stream waits for the op (c10d's work.wait() of a sync call);
            # the op already starts after the current stream's last op: no event needed
            current.follow(op)
        return None
    blocks_host = gloo or what == "barrier"
    return Work(rt, op, rendezvous.failure, outputs=list(written),
                stream_of=None if blocks_host else device)


def p2p(rt, ops, batched: bool = False) -> list:
    """Post ``ops`` (``(kind, tensor, peer, group, tag, group_peer)``, kind "send"/"recv") as
    the calling rank's backend does it (docs/adr/0015); one Work (or None, for a rank
    outside the group) per op.

    - nccl, one op: on the rank's stream for that peer pair, after the work already on its
      current stream; ``Work.wait()`` makes the current stream wait (the host goes on);
    - nccl, a batch (``batched``): ONE op on the device stream (ProcessGroupNCCL runs a
      batch on the device's communicator, inside ncclGroupStart/End: its ops progress
      together, so a ring of send-then-receive completes);
    - gloo: each op progresses on its own once its tensor's pending device writes are done;
      ``Work.wait()`` blocks the host until the op completed.
    """
    posts = [_post(rt, *op) for op in ops]
    live = [post for post in posts if post is not None]
    if not live:
        return posts
    state = rt.spawn_state(SLOT)
    device = live[0].tensor._storage.device
    if any(post.tensor._storage.device is not device for post in live):
        raise ValueError("batch_isend_irecv: all tensors must be on one device")
    backend = state.backend_of(live[0].group, live[0].rank)
    if backend == "gloo":
        return [None if post is None else _gloo(rt, state, post) for post in posts]
    if batched:
        start = functools.partial(_start_batch, rt, state, live)
        desc = f"batch_isend_irecv of {len(live)} ops by rank {live[0].rank}"
        stream = device.named_stream(f"{backend} {live[0].group.name}")
        op = stream.enqueue_work(desc, start, device.kind.launch_overhead_ns,
                                 deps=_after(current_stream(rt, device), stream))
    else:
        post = live[0]
        stream = state.p2p.pair_stream(post.rank, post.peer, device)
        op = stream.enqueue_work(post.describe(), functools.partial(state.p2p.ready, post),
                                 device.kind.launch_overhead_ns,
                                 deps=_after(current_stream(rt, device), stream))
    works = []
    for post in posts:
        if post is None:
            works.append(None)
            continue
        if post.kind == "recv":
            post.tensor._storage.last_write = op
        state.p2p.track(op, post)
        works.append(Work(rt, op, lambda post=post: post.error, post, stream_of=device))
    return works


def _start_batch(rt, state, live):
    handles = [state.p2p.ready(post) for post in live]
    if len(handles) == 1:
        return handles[0]
    return all_of(rt.engine, handles, f"batch of {len(handles)} p2p ops")


def _gloo(rt, state, post) -> Work:
    """gloo: the op starts once the work queued on the tensor's device is done (gloo works
    on host memory, where ops are synchronous; coopsim's memory is the device's, so its
    pending reads and writes must be over); the Work completes with the op."""
    last = current_stream(rt, post.tensor._storage.device).last
    pending = () if last is None or last.done else (last,)
    all_of(rt.engine, pending, f"gloo {post.describe()}: the device work queued before it").add_callback(
        lambda _h: state.p2p.ready(post))
    if post.kind == "recv":
        post.tensor._storage.last_write = post.done
    return Work(rt, post.done, lambda: post.error, post)


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
    if peer is None and state.backend_of(g, task.rank) == "nccl":
        raise RuntimeError("Backend nccl does not support recvAnysource")
    if peer is not None and g.member(peer) < 0:
        raise ValueError(f"{what}: rank {peer} is not in group {g.name} (ranks {list(g.ranks)})")
    if peer == task.rank:
        raise ValueError("Invalid destination rank: destination rank should not be the same as "
                         "the rank of the current process." if kind == "send" else
                         "Invalid source rank: source rank should not be the same as the rank "
                         "of the current process.")
    post = state.p2p.post(Post(kind, task.rank, peer, g, tag, tensor, flat, task))
    if rt.comm_hooks:
        site = user_site(sys._getframe(), state.user_files)
        for hook in rt.comm_hooks:  # the flight recorder (coopsim.testing)
            hook(task, g, None, kind, flat.size, flat.size, tensor.dtype, post.done, peer, site)
    return post


def _after(current, stream) -> tuple:
    """The deps of a communication op on ``stream``: the work queued so far on the caller's
    ``current`` stream (the NCCL stream waits for the current stream before it launches,
    ProcessGroupNCCL's ``syncStream``), unless ``stream`` is behind it already."""
    last = current.last
    return () if last is None or last.done or last is stream.last else (last,)


def _chain(calls):
    """One callable running ``calls`` (None among them: nothing) in order; None if none."""
    calls = [call for call in calls if call is not None]
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
