"""Portable workers: each runs unchanged on coopsim and on real PyTorch (``launch``,
``crosscheck``, torchrun). They use only names that both offer, and run in the default
process group that ``launch`` (or ``coopsim.bridge.torchrun``) initializes.

Portable code creates tensors with ``torch.zeros/ones/full/arange/tensor`` (on coopsim they
live on the rank's simulated GPU; on real PyTorch on the CPU, or wherever the user moves them),
and returns tensors for the comparison, never host copies of them (``to_host`` does that).
"""

from __future__ import annotations


def collectives_tour(rank, torch):
    """Each collective once, on small int64 and float32 tensors."""
    dist = torch.distributed
    world = dist.get_world_size()
    out = {}
    t = torch.arange(4, dtype=torch.int64) + rank
    dist.all_reduce(t)
    out["all_reduce_sum_int64"] = t
    t = torch.full((3,), float(rank + 1), dtype=torch.float32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    out["all_reduce_max_float32"] = t
    t = torch.full((2,), 10 * (rank + 1), dtype=torch.int64)
    dist.broadcast(t, src=world - 1)
    out["broadcast"] = t
    gathered = [torch.zeros(2, dtype=torch.float32) for _ in range(world)]
    dist.all_gather(gathered, torch.full((2,), rank * 1.5, dtype=torch.float32))
    out["all_gather"] = gathered
    into = torch.zeros(world * 2, dtype=torch.int64)
    # torch 2.13's names where they exist (the older ones warn there), else the older ones
    all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    all_gather_single(into, torch.full((2,), rank, dtype=torch.int64))
    out["all_gather_single"] = into
    scattered = torch.zeros(2, dtype=torch.float32)
    chunks = [torch.full((2,), float(rank + 10 * j), dtype=torch.float32) for j in range(world)]
    dist.reduce_scatter(scattered, chunks)
    out["reduce_scatter"] = scattered
    single = torch.zeros(2, dtype=torch.int64)
    reduce_scatter_single(single, torch.arange(world * 2, dtype=torch.int64) * (rank + 1))
    out["reduce_scatter_single"] = single
    received = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_to_all(received, [torch.full((1,), 100 * rank + j, dtype=torch.int64) for j in range(world)])
    out["all_to_all"] = received
    a2a = torch.zeros(world, dtype=torch.float32)
    dist.all_to_all_single(a2a, torch.arange(world, dtype=torch.float32) + 10 * rank)
    out["all_to_all_single"] = a2a
    dist.barrier()
    return out


def p2p_ring(rank, torch):
    """Pass a token once around the ring with ``batch_isend_irecv`` (every rank sends to its
    right neighbour and receives from its left one in one batch)."""
    dist = torch.distributed
    world = dist.get_world_size()
    token = torch.full((3,), rank * 2 + 1, dtype=torch.int64)
    received = torch.zeros(3, dtype=torch.int64)
    ops = [dist.P2POp(dist.isend, token, (rank + 1) % world),
           dist.P2POp(dist.irecv, received, (rank - 1) % world)]
    for work in dist.batch_isend_irecv(ops):
        work.wait()
    return received


def ring_all_reduce(rank, torch):
    """The tutorial's hand-written ring all-reduce (PyTorch tutorial "Writing Distributed
    Applications with PyTorch"), spelled as there: each step an ``isend`` to the right, a
    blocking ``recv`` from the left, then ``wait`` on the send (sum of ``rank + 1``)."""
    dist = torch.distributed
    world = dist.get_world_size()
    send = torch.full((4,), float(rank + 1), dtype=torch.float32)
    send_buff, recv_buff, accum = send.clone(), send.clone(), send.clone()
    left, right = (rank - 1) % world, (rank + 1) % world
    for i in range(world - 1):
        if i % 2 == 0:
            request = dist.isend(send_buff, right)
            dist.recv(recv_buff, left)
            accum[:] += recv_buff[:]
        else:
            request = dist.isend(recv_buff, right)
            dist.recv(send_buff, left)
            accum[:] += send_buff[:]
        request.wait()
    return accum


def data_parallel_step(rank, torch, steps=3, lr=0.05):
    """Least squares by data-parallel gradient descent: each rank has its own rows, computes
    its gradient by hand, averages it with ``all_reduce``; returns the weights and the last
    local loss (identical weights on every rank prove the replicas stayed in sync)."""
    dist = torch.distributed
    world = dist.get_world_size()
    x = (torch.arange(12, dtype=torch.float32).reshape(4, 3) + rank) / 10
    y = torch.arange(4, dtype=torch.float32).reshape(4, 1) - rank
    w = torch.zeros(3, 1, dtype=torch.float32)
    loss = None
    for _ in range(steps):
        error = x @ w - y
        loss = (error * error).mean()
        grad = x.t() @ error * (2 / 4)
        dist.all_reduce(grad)
        w -= grad * (lr / world)
    return {"w": w, "loss": loss}


def tensor_parallel_mlp(rank, torch):
    """A Megatron-style MLP in plain PyTorch: ``gelu(x W1^T) W2^T`` with W1 split by rows
    (column-parallel) and W2 by columns (row-parallel); one ``all_reduce`` sums the partial
    outputs. Weights are deterministic (no random numbers: those differ between runtimes)."""
    F = torch.nn.functional
    dist = torch.distributed
    world = dist.get_world_size()
    hidden, batch = 8, 3
    x = torch.linspace(-1, 1, batch * hidden).reshape(batch, hidden)
    w1 = torch.cos(torch.arange(4 * hidden * hidden, dtype=torch.float32)).reshape(4 * hidden, hidden) / 4
    w2 = torch.sin(torch.arange(hidden * 4 * hidden, dtype=torch.float32)).reshape(hidden, 4 * hidden) / 8
    w1_part = w1.chunk(world, dim=0)[rank]
    w2_part = w2.chunk(world, dim=1)[rank]
    y = torch.matmul(F.gelu(torch.matmul(x, w1_part.T)), w2_part.T)
    dist.all_reduce(y)
    return y


def portable_programs(rank, torch):
    """All of the above in one run (one real launch costs a few seconds of start-up)."""
    return {"collectives": collectives_tour(rank, torch), "p2p_ring": p2p_ring(rank, torch),
            "ring_all_reduce": ring_all_reduce(rank, torch),
            "data_parallel": data_parallel_step(rank, torch),
            "tensor_parallel_mlp": tensor_parallel_mlp(rank, torch)}
