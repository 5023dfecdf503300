"""Point-to-point: matching sends with receives, and moving the data over the links.

A send and a receive match when they name each other (a receive with ``src=None`` takes any
sender), on the same group and tag, in posting order (posting happens in round order: C9).
A matched pair is checked (size and dtype: ``CollectiveMismatchError`` in the ranks still
running), and the transfer starts when both sides are ready: under nccl when both ranks' streams
have reached their op (a single op runs on its peer pair's own stream, ``pair_stream``); under
gloo when the tensor's pending device writes are done (gloo works on the host). See
docs/adr/0015-p2p-and-backend-semantics.md.
"""

from __future__ import annotations

import sys

from coopsim.engine import Handle, Stream
from coopsim.errors import CollectiveMismatchError
from coopsim.runtime.frames import user_location
from coopsim.tensor.ops import timing_only


class P2POp:
    """``torch.distributed.P2POp``: ``op`` is ``ctx.distributed.isend`` or ``irecv``."""

    def __init__(self, op, tensor, peer=None, group=None, tag=0, group_peer=None):
        if getattr(op, "__name__", None) not in ("isend", "irecv"):
            raise ValueError("Invalid ``op``. Expected ``op`` to be of type ``torch.distributed.isend`` "
                             "or ``torch.distributed.irecv``.")
        if (peer is None) == (group_peer is None):
            raise ValueError("Exactly one of peer and group_peer must be given")
        self.op, self.tensor, self.peer, self.group, self.tag = op, tensor, peer, group, tag
        self.group_peer = group_peer


class P2POpHandle(Handle):
    """One side of a point-to-point transfer; ``post`` says who waits for whom."""

    __slots__ = ("post",)

    def __init__(self, desc, post):
        super().__init__(desc)
        self.post = post

    def started(self) -> bool:
        """Has the op begun (its side is ready to transfer)?"""
        return self.post.ready


class Post:
    """A posted send or receive."""

    __slots__ = ("kind", "rank", "peer", "group", "tag", "tensor", "flat", "task", "done",
                 "ready", "match", "error", "where")

    def __init__(self, kind, rank, peer, group, tag, tensor, flat, task):
        self.kind = kind  # "send" | "recv"
        self.rank = rank
        self.peer = peer  # global rank; None for recv from any source
        self.group = group
        self.tag = tag
        self.tensor = tensor
        self.flat = flat
        self.task = task
        self.done = P2POpHandle(self.describe(), self)
        self.ready = False
        self.match: Post | None = None
        self.error = None
        self.where = user_location(sys._getframe(1))  # the user's file:line, for reports

    def describe(self) -> str:
        peer = "any" if self.peer is None else self.peer
        key = "dst" if self.kind == "send" else "src"
        return f"{self.kind}({key}={peer}) by rank {self.rank}"


class P2P:
    """The matching of one spawn's sends and receives."""

    def __init__(self, rt):
        self.rt = rt  # the runtime port
        self.unmatched: list[Post] = []  # in posting order
        self.by_op: dict = {}  # stream op Handle -> its Post, while incomplete (for reports)
        self.posts: list[Post] = []  # every post, in posting order (pruned when done)

    def pair_stream(self, rank: int, peer: int, device) -> Stream:
        """``rank``'s stream for its p2p ops with ``peer`` (ProcessGroupNCCL's communicator
        and stream per ``getKeySendRecv(rank, peer)``: one per unordered pair, per rank)."""
        low, high = min(rank, peer), max(rank, peer)
        return device.named_stream(f"p2p {low}:{high}")

    def open_posts(self) -> list[Post]:
        """The posts not completed yet, in posting order."""
        self.posts = [p for p in self.posts if not p.done.done]
        return self.posts

    def post(self, post: Post) -> Post:
        self.posts.append(post)
        matches = [other for other in self.unmatched if self._pair(post, other)]
        if matches:
            other = matches[0]
            if post.peer is None and len(matches) > 1 and self.rt.strategy is not None:
                # a wildcard receive may take any sender's oldest send (schedule exploration)
                oldest = {m.rank: m for m in reversed(matches)}
                other = self.rt.strategy.choose([oldest[r] for r in sorted(oldest)])
            self.unmatched.remove(other)
            post.match, other.match = other, post
            self._check(post, other)
            return post
        self.unmatched.append(post)
        return post

    @staticmethod
    def _pair(a: Post, b: Post) -> bool:
        if a.kind == b.kind or a.group is not b.group or a.tag != b.tag:
            return False
        send, recv = (a, b) if a.kind == "send" else (b, a)
        return send.peer == recv.rank and recv.peer in (None, send.rank)

    def _check(self, a: Post, b: Post) -> None:
        send, recv = (a, b) if a.kind == "send" else (b, a)
        if send.flat.size == recv.flat.size and send.tensor.dtype is recv.tensor.dtype:
            return
        msg = (f"send/recv mismatch between rank {send.rank} and rank {recv.rank}: "
               f"{send.describe()} sends {send.flat.size} elements of {send.tensor.dtype}, "
               f"{recv.describe()} expects {recv.flat.size} elements of {recv.tensor.dtype}")
        for side in (send, recv):
            side.error = CollectiveMismatchError(msg, None, ["size" if send.flat.size != recv.flat.size else "dtype"])
        other = b  # a is the caller: it raises; b may be blocked (or ended: nccl's send returns)
        if other.task.greenlet is not None and not other.task.greenlet.dead:
            self.rt.interrupt(other.task, other.error)
        raise a.error

    def ready(self, post: Post) -> Handle:
        """The post's stream reached it; start the transfer once both sides are there."""
        post.ready = True
        other = post.match
        if other is not None and other.ready:
            self._transfer(post if post.kind == "send" else other)
        return post.done

    def _transfer(self, send: Post) -> None:
        recv = send.match
        rt = self.rt
        engine = rt.engine
        payload = None if timing_only(send.tensor) else send.flat.copy()  # timing-only: no data moves (ADR-0020)
        nbytes = send.flat.size * send.tensor.dtype.itemsize
        src_dev, dst_dev = send.tensor._storage.device.index, recv.tensor._storage.device.index
        route = rt.topology.route(src_dev, dst_dev)

        def arrived(_h):
            if payload is not None:
                recv.flat[:] = payload
            engine.schedule(send.done, engine.now_ns)
            engine.schedule(recv.done, engine.now_ns)

        rt.network.transfer(route, nbytes, f"p2p rank {send.rank} -> rank {recv.rank}", on_done=arrived)

    def track(self, op: Handle, post: Post) -> None:
        """Remember that stream op ``op`` is ``post``'s, until it completes."""
        self.by_op[op] = post
        op.add_callback(lambda _op: self.by_op.pop(op, None))

    def waits_on(self, handle) -> tuple[int | None, str] | None:
        """(peer rank or None, description) if ``handle`` is a p2p op, else None."""
        post = handle.post if isinstance(handle, P2POpHandle) else self.by_op.get(handle)
        return None if post is None else (post.peer, post.describe())
