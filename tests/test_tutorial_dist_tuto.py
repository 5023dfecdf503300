"""PyTorch's tutorial "Writing Distributed Applications with PyTorch"
(pytorch/tutorials intermediate_source/dist_tuto.rst), ported by changing only where
``torch``, ``dist`` and ``mp`` come from, with the tutorial's own launcher
(``mp.Process(target=init_process, ...)``, ``start``, ``join``).

Lines the port had to change, because coopsim lacks the name today: none in the p2p, all-reduce
and ring examples. The collectives section lists calls without code; ``collectives`` below
writes them in the tutorial's style. The distributed SGD section (MNIST, ``nn``, ``optim``)
is not ported: coopsim has no autograd or datasets.
"""

import os
import re

import pytest

import coopsim


def tutorial(ctx):
    """The tutorial's code, with ``torch``/``dist``/``mp`` bound to a coopsim context."""
    torch = ctx
    dist = ctx.distributed
    mp = ctx.multiprocessing
    Process = mp.Process

    def run_blocking(rank, size):
        """Blocking point-to-point communication."""
        tensor = torch.zeros(1)
        if rank == 0:
            tensor += 1
            # Send the tensor to process 1
            dist.send(tensor=tensor, dst=1)
        else:
            # Receive tensor from process 0
            dist.recv(tensor=tensor, src=0)
        print('Rank ', rank, ' has data ', tensor[0])

    def run_nonblocking(rank, size):
        """Non-blocking point-to-point communication."""
        tensor = torch.zeros(1)
        req = None
        if rank == 0:
            tensor += 1
            # Send the tensor to process 1
            req = dist.isend(tensor=tensor, dst=1)
            print('Rank 0 started sending')
        else:
            # Receive tensor from process 0
            req = dist.irecv(tensor=tensor, src=0)
            print('Rank 1 started receiving')
        req.wait()
        print('Rank ', rank, ' has data ', tensor[0])

    def run_all_reduce(rank, size):
        """ Simple point-to-point communication. """
        group = dist.new_group([0, 1])
        tensor = torch.ones(1)
        dist.all_reduce(tensor, op=dist.reduce_op.SUM, group=group)
        print('Rank ', rank, ' has data ', tensor[0])

    def allreduce(send, recv):
        """ Implementation of a ring-reduce with addition. """
        rank = dist.get_rank()
        size = dist.get_world_size()
        send_buff = send.clone()
        recv_buff = send.clone()
        accum = send.clone()

        left = ((rank - 1) + size) % size
        right = (rank + 1) % size

        for i in range(size - 1):
            if i % 2 == 0:
                # Send send_buff
                send_req = dist.isend(send_buff, right)
                dist.recv(recv_buff, left)
                accum[:] += recv_buff[:]
            else:
                # Send recv_buff
                send_req = dist.isend(recv_buff, right)
                dist.recv(send_buff, left)
                accum[:] += send_buff[:]
            send_req.wait()
        recv[:] = accum[:]

    def run_ring(rank, size):
        send = torch.ones(8) * (rank + 1)
        recv = torch.zeros(8)
        allreduce(send, recv)
        print('Rank ', rank, ' has data ', recv[0])

    def collectives(rank, size):
        """The six collectives and the barrier of the tutorial's list, on the world."""
        t = torch.ones(2) * (rank + 1)
        dist.broadcast(t, src=0)
        print('broadcast', rank, t.tolist())
        t = torch.ones(2) * (rank + 1)
        dist.reduce(t, dst=0, op=dist.ReduceOp.SUM)
        if rank == 0:
            print('reduce', rank, t.tolist())
        t = torch.ones(2) * (rank + 1)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        print('all_reduce', rank, t.tolist())
        t = torch.zeros(2)
        scatter_list = [torch.ones(2) * (i + 10) for i in range(size)] if rank == 0 else None
        dist.scatter(t, scatter_list=scatter_list, src=0)
        print('scatter', rank, t.tolist())
        t = torch.ones(2) * rank
        gather_list = [torch.zeros(2) for _ in range(size)] if rank == 0 else None
        dist.gather(t, gather_list=gather_list, dst=0)
        if rank == 0:
            print('gather', rank, [g.tolist() for g in gather_list])
        tensor_list = [torch.zeros(2) for _ in range(size)]
        dist.all_gather(tensor_list, torch.ones(2) * rank)
        print('all_gather', rank, [g.tolist() for g in tensor_list])
        dist.barrier()

    def init_process(rank, size, fn, backend='gloo'):
        """ Initialize the distributed environment. """
        os.environ['MASTER_ADDR'] = '127.0.0.1'
        os.environ['MASTER_PORT'] = '29500'
        dist.init_process_group(backend, rank=rank, world_size=size)
        fn(rank, size)

    def main(run, size=2, backend='gloo'):
        processes = []
        mp.set_start_method("spawn")
        for rank in range(size):
            p = Process(target=init_process, args=(rank, size, run, backend))
            p.start()
            processes.append(p)

        for p in processes:
            p.join()
        return processes

    return {"blocking": run_blocking, "nonblocking": run_nonblocking, "all_reduce": run_all_reduce,
            "ring": run_ring, "collectives": collectives, "main": main}


@pytest.fixture
def launch(monkeypatch, capsys):
    """Run one tutorial example on a fresh context; returns (exit codes, stdout)."""
    monkeypatch.setenv("MASTER_ADDR", "unset")  # the tutorial writes these; restored after
    monkeypatch.setenv("MASTER_PORT", "unset")

    def go(example, size=2, backend="gloo"):
        with coopsim.RuntimeContext("small") as ctx:
            code = tutorial(ctx)
            processes = code["main"](code[example], size, backend)
        return [p.exitcode for p in processes], capsys.readouterr().out

    return go


def data(out: str) -> list[float]:
    """The values of the tutorial's 'Rank  r  has data  tensor(v, ...)' lines."""
    return [float(v) for v in re.findall(r"tensor\((-?[\d.]+)", out)]


BACKENDS = ("gloo", "nccl")


@pytest.mark.parametrize("backend", BACKENDS)
def test_tutorial_blocking_point_to_point(launch, backend):
    codes, out = launch("blocking", backend=backend)
    assert codes == [0, 0]
    assert out.count("has data") == 2 and data(out) == [1.0, 1.0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_tutorial_non_blocking_point_to_point(launch, backend):
    codes, out = launch("nonblocking", backend=backend)
    assert codes == [0, 0]
    assert "Rank 0 started sending" in out and "Rank 1 started receiving" in out
    assert data(out) == [1.0, 1.0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_tutorial_all_reduce_on_a_new_group_with_the_deprecated_reduce_op(launch, backend):
    with pytest.warns(FutureWarning, match="`torch.distributed.reduce_op` is deprecated"):
        codes, out = launch("all_reduce", backend=backend)
    assert codes == [0, 0] and data(out) == [2.0, 2.0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_tutorial_hand_written_ring_all_reduce(launch, backend):
    codes, out = launch("ring", size=4, backend=backend)
    assert codes == [0, 0, 0, 0]
    assert data(out) == [10.0] * 4  # 1 + 2 + 3 + 4 on every rank


@pytest.mark.parametrize("backend", BACKENDS)
def test_tutorial_collectives(launch, backend):
    codes, out = launch("collectives", size=3, backend=backend)
    assert codes == [0, 0, 0]
    lines = set(out.splitlines())
    assert {f"broadcast {r} [1.0, 1.0]" for r in range(3)} <= lines
    assert "reduce 0 [6.0, 6.0]" in lines
    assert {f"all_reduce {r} [3.0, 3.0]" for r in range(3)} <= lines
    assert {f"scatter {r} [{r + 10.0}, {r + 10.0}]" for r in range(3)} <= lines
    assert "gather 0 [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]" in lines
    assert {f"all_gather {r} [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]" for r in range(3)} <= lines
