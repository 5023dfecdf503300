"""torch.distributed semantics that cut across collectives: aliasing, batches, memory."""

import numpy as np

import coopsim


def spawn(worker, nprocs, topology="fully_connected8", **kwargs):
    with coopsim.RuntimeContext(topology, **kwargs) as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=nprocs)
        return ctx


def test_in_place_all_gather_and_reduce_scatter_with_aliased_buffers():
    results = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        p = dist.get_world_size()
        full = ctx.from_numpy(np.arange(p * 3, dtype=np.float32) + 100 * rank)
        dist.reduce_scatter_single(full[rank * 3:(rank + 1) * 3], full)  # output aliases input
        gathered = ctx.zeros(p * 2)
        gathered[rank * 2:(rank + 1) * 2].fill_(rank + 1)
        dist.all_gather_single(gathered, gathered[rank * 2:(rank + 1) * 2])  # input aliases output
        results[rank] = (full[rank * 3:(rank + 1) * 3].tolist(), gathered.tolist())

    for algorithm in ("ring", "halving_doubling", "direct"):
        spawn(worker, 4, ccl={"algorithms": {"reduce_scatter": algorithm, "all_gather": algorithm}})
        for rank, (chunk, gathered) in results.items():
            expected = [sum(float(i + 100 * r) for r in range(4)) for i in range(rank * 3, rank * 3 + 3)]
            assert chunk == expected, (algorithm, rank)
            assert gathered == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]


def test_batch_isend_irecv_ring_of_send_then_receive_completes():
    got = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        p = dist.get_world_size()
        out, inp = ctx.full((2,), float(rank)), ctx.zeros(2)
        works = dist.batch_isend_irecv([dist.P2POp(dist.isend, out, (rank + 1) % p),
                                        dist.P2POp(dist.irecv, inp, (rank - 1) % p)])
        for work in works:
            work.wait()
        got[rank] = inp.tolist()

    spawn(worker, 4)
    assert got == {r: [float((r - 1) % 4)] * 2 for r in range(4)}


def test_completed_collectives_let_go_of_their_buffers():
    open_after = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        t = ctx.ones(1000)
        for _ in range(20):
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        t.tolist()
        dist.barrier()
        open_after[rank] = len(dist.group.WORLD.open_collectives())

    spawn(worker, 4)
    assert open_after[3] == 0


def test_torch_2_13_renames_the_tensor_collectives_and_the_old_names_still_work_and_warn():
    # torch 2.13 (torch/distributed/distributed_c10d.py): all_gather_single and
    # reduce_scatter_single; all_gather_into_tensor and reduce_scatter_tensor call them after
    # a FutureWarning. The two spellings are one collective: ranks may mix them.
    import warnings

    results, caught = {}, {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        gathered, scattered = ctx.zeros(8), ctx.zeros(2)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            if rank % 2:
                dist.all_gather_into_tensor(gathered, ctx.full((2,), float(rank)))  # OLD-NAMES
                dist.reduce_scatter_tensor(scattered, ctx.arange(8, dtype=ctx.float32))
            else:
                dist.all_gather_single(gathered, ctx.full((2,), float(rank)))
                dist.reduce_scatter_single(scattered, ctx.arange(8, dtype=ctx.float32))
        caught[rank] = [(w.category, str(w.message), w.filename, w.lineno) for w in seen]
        results[rank] = (gathered.tolist(), scattered.tolist())

    spawn(worker, 4)
    for rank in range(4):
        assert results[rank] == ([0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0],
                                 [8.0 * rank, 8.0 * rank + 4])
    assert caught[0] == caught[2] == []
    line = next(i + 1 for i, text in enumerate(open(__file__).read().splitlines())
                if "# OLD-NAMES" in text and "next(" not in text)
    assert caught[1] == [
        (FutureWarning, "`torch.distributed.all_gather_into_tensor` is deprecated. Please use "
                        "`torch.distributed.all_gather_single` instead.", __file__, line),
        (FutureWarning, "`torch.distributed.reduce_scatter_tensor` is deprecated. Please use "
                        "`torch.distributed.reduce_scatter_single` instead.", __file__, line + 1)]
