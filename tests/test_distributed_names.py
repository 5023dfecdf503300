"""torch.distributed names added by issue 9: subgroups, rank translation, object collectives,
availability checks, Work.get_future (each checked against PyTorch's behaviour)."""

import pytest

import coopsim


def spawn(worker, nprocs=4, *args):
    with coopsim.RuntimeContext("small") as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx, *args), nprocs=nprocs)
        return ctx.sim.now_ns()


def test_new_subgroups_and_rank_translation():
    seen = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        mine, subgroups = dist.new_subgroups(2)
        seen[rank] = (dist.get_process_group_ranks(mine), [dist.get_process_group_ranks(g)
                                                            for g in subgroups if g is not dist.GroupMember.NON_GROUP_MEMBER],
                      dist.get_global_rank(mine, 1), dist.get_group_rank(mine, rank),
                      dist.get_global_rank(dist.group.WORLD, 3), dist.get_group_rank(None, 2))
        t = ctx.ones(1) * rank
        dist.all_reduce(t, group=mine)
        seen[rank] += (t.item(),)
        with pytest.raises(ValueError, match=f"Global rank {(rank + 2) % 4} is not part of group"):
            dist.get_group_rank(mine, (rank + 2) % 4)
        with pytest.raises(ValueError, match="Group rank 2 is not part of group"):
            dist.get_global_rank(mine, 2)
        with pytest.raises(ValueError, match=r"The world size \(4\) must be divisible by 'group_size=3'"):
            dist.new_subgroups(3)
        with pytest.raises(ValueError, match=r"The arg 'group_size' \(0\) must be positive"):
            dist.new_subgroups(0)

    spawn(worker)
    assert seen[0] == ([0, 1], [[0, 1]], 1, 0, 3, 2, 1.0)
    assert seen[3] == ([2, 3], [[2, 3]], 3, 1, 3, 2, 5.0)


def test_object_collectives_move_pickled_objects():
    seen = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        gathered = [None] * 3
        dist.all_gather_object(gathered, {"rank": rank, "tag": "x" * rank})
        objs = [{"cfg": [1, 2]}, "two"] if rank == 1 else [None, None]
        dist.broadcast_object_list(objs, src=1)
        at_root = [None] * 3 if rank == 2 else None
        dist.gather_object(("g", rank), at_root, dst=2)
        out = [None]
        dist.scatter_object_list(out, [f"for {i}" for i in range(3)] if rank == 0 else None, src=0)
        seen[rank] = (gathered, objs, at_root, out[0])

    spawn(worker, 3)
    expected_gather = [{"rank": r, "tag": "x" * r} for r in range(3)]
    for r in range(3):
        assert seen[r][0] == expected_gather and seen[r][1] == [{"cfg": [1, 2]}, "two"]
        assert seen[r][3] == f"for {r}"
    assert seen[2][2] == [("g", 0), ("g", 1), ("g", 2)] and seen[0][2] is None


def test_object_collectives_cost_their_pickled_size():
    def worker(rank, ctx, size):
        ctx.distributed.init_process_group()
        objs = [b"x" * size] if rank == 0 else [None]
        ctx.distributed.broadcast_object_list(objs, src=0)

    assert spawn(worker, 2, 1 << 24) > 2 * spawn(worker, 2, 16)


def test_reduce_op_alias_availability_and_torchelastic(monkeypatch):
    with coopsim.RuntimeContext("small") as ctx:
        dist = ctx.distributed
        with pytest.warns(FutureWarning, match="`torch.distributed.reduce_op` is deprecated, please use "
                                               "`torch.distributed.ReduceOp` instead"):
            assert dist.reduce_op.SUM is dist.ReduceOp.SUM
        assert dist.is_nccl_available() and dist.is_gloo_available()
        monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
        assert not dist.is_torchelastic_launched()
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "42")
        assert dist.is_torchelastic_launched()
        monkeypatch.delenv("LOCAL_RANK", raising=False)
        assert dist.get_node_local_rank(fallback_rank=2) == 2
        with pytest.raises(RuntimeError, match="LOCAL_RANK is not in the environment. Consider passing fallback_rank"):
            dist.get_node_local_rank()
        monkeypatch.setenv("LOCAL_RANK", "5")
        assert dist.get_node_local_rank(fallback_rank=2) == 5
        with pytest.raises(AttributeError, match=r"coopsim has no torch.distributed.no_such_name \(see docs/torch-surface.md"):
            dist.no_such_name
        assert not hasattr(dist, "__deepcopy__")  # a protocol probe gets a plain AttributeError
        # as torch 2.13 prints them (a pybind11 enum)
        assert (str(dist.ReduceOp.MAX), repr(dist.ReduceOp.MAX)) == ("RedOpType.MAX", "<RedOpType.MAX: 4>")


def test_work_get_future_wait_value_done_then():
    seen = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        t = ctx.ones(4) * (rank + 1)
        fut = dist.all_reduce(t, async_op=True).get_future()
        doubled = fut.then(lambda f: f.value()[0] * 2)  # device op: does not block
        assert not fut.done()
        value = fut.wait()  # nccl: the current stream waits; the host reads below wait (C8)
        seen[rank] = (value[0] is t, doubled.wait().tolist(), t.tolist(), fut.done())

    spawn(worker, 2)
    assert seen[0] == (True, [6.0] * 4, [3.0] * 4, True) and seen[1] == seen[0]
