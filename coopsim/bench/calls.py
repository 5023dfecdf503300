"""What every rank of the bench does, timed (``runner``) or checked (``check``): meet the
others on the host, lay out its send and receive buffers, call the collective.

Only public APIs: the torch-shaped context, ``ctx.sim`` and the distributed layer's
``out_of_place`` entry point (docs/adr/0010).
"""

from __future__ import annotations

from coopsim.bench.options import OPS, Config
from coopsim.distributed.out_of_place import out_of_place


class HostBarrier:
    """The ranks meet on the host, at no virtual cost (nccl-tests' barrier between threads).

    ``on_release`` (optional) runs once, in the last rank to arrive, at the instant of the
    release: the bench reads the clock and starts or stops the trace there."""

    def __init__(self, ctx, n: int):
        self.ctx, self.n = ctx, n
        self.arrived = 0
        self.event = None

    def wait(self, on_release=None) -> None:
        if self.event is None:
            self.event = self.ctx.sim.event("benchmark host barrier")
        event = self.event
        self.arrived += 1
        if self.arrived == self.n:
            self.arrived, self.event = 0, None
            if on_release is not None:
                on_release()
            event.set()
        self.ctx.wait(event)


def checked(cfg: Config, in_place: bool) -> bool:
    """True if ``-c`` checks this placement's results (not in-place alltoall or sendrecv,
    as nccl-tests)."""
    return cfg.check > 0 and not (in_place and cfg.collective.name in ("alltoall", "sendrecv"))


def buffers(cfg: Config, size: int, in_place: bool, rank: int, make):
    """(send, recv) of ``rank`` for one collective of ``size``; ``make(n, k)`` gives a 1-D
    tensor of ``n`` elements, the k-th (0 or 1) buffer of the rank. In place they alias as
    NCCL's in-place calls do (all_gather: send is recv's own chunk; reduce_scatter: recv is
    send's own chunk; the others: the same tensor) and only buffer 0 is made."""
    c, name = cfg.count(size), cfg.collective.name
    if name == "all_gather" and in_place:
        recv = make(cfg.output_elements(size), 0)
        return recv[rank * c:(rank + 1) * c], recv
    send = make(cfg.input_elements(size), 0)
    if not in_place:
        return send, make(cfg.output_elements(size), 1)
    if name == "reduce_scatter":
        return send, send[rank * c:(rank + 1) * c]
    return send, send


def launch(ctx, cfg: Config, size: int, in_place: bool, rank: int, send, recv) -> None:
    """Enqueue one collective; the rank's current stream waits for it (``Work.wait()`` under
    NCCL: the host goes on), so what follows on the stream sees its result, as in nccl-tests,
    which runs everything on one stream."""
    dist = ctx.distributed
    op = getattr(dist.ReduceOp, OPS[cfg.op])
    name, root, p = cfg.collective.name, cfg.root, cfg.nranks
    if name in ("all_reduce", "broadcast", "reduce") and not in_place:
        work = out_of_place(dist, name, recv, send, op=op, root=root)
    elif name == "all_reduce":
        work = dist.all_reduce(recv, op=op, async_op=True)
    elif name == "broadcast":
        work = dist.broadcast(recv, src=root, async_op=True)
    elif name == "reduce":
        work = dist.reduce(recv, dst=root, op=op, async_op=True)
    elif name == "all_gather":
        work = dist.all_gather_single(recv, send, async_op=True)
    elif name == "reduce_scatter":
        work = dist.reduce_scatter_single(recv, send, op=op, async_op=True)
    elif name == "alltoall":
        work = dist.all_to_all_single(recv, send, async_op=True)
    else:  # sendrecv: send to rank+1, receive from rank-1, as one grouped op
        c = cfg.count(size)
        to_next = [c if j == (rank + 1) % p else 0 for j in range(p)]
        from_prev = [c if j == (rank - 1) % p else 0 for j in range(p)]
        work = dist.all_to_all_single(recv, send, output_split_sizes=from_prev,
                                      input_split_sizes=to_next, async_op=True)
    work.wait()
