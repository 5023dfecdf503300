"""Real-world distributed hangs, reproduced: each is reported at once and precisely (C6, C7)."""

import datetime
import inspect
import time

import pytest

import coopsim
from tests.conftest import live_coopsim_greenlets


def line_of(marker: str) -> int:
    lines = inspect.getsource(inspect.getmodule(line_of)).splitlines()
    return next(i + 1 for i, line in enumerate(lines) if marker in line and "line_of" not in line)


def run(worker, nprocs=4, topology="small", args=(), **kwargs):
    start = time.perf_counter()
    try:
        with coopsim.RuntimeContext(topology, **kwargs) as ctx:
            ctx.multiprocessing.spawn(worker, args=(ctx, *args), nprocs=nprocs)
    finally:
        assert time.perf_counter() - start < 1.0, "a hang scenario must be diagnosed in well under a second"
        assert live_coopsim_greenlets() == []


def test_c7_one_rank_skips_a_collective():
    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        t = ctx.ones(8)
        if rank != 2:
            dist.all_reduce(t)
        t.tolist()  # READS-RESULT

    with pytest.raises(coopsim.DeadlockError) as info:
        run(worker)
    report = info.value.report
    rows = {r["rank"]: r for r in report["ranks"]}
    assert rows[2]["state"] == "ended"
    for r in (0, 1, 3):
        assert rows[r]["state"] == "blocked"
        assert rows[r]["where"].endswith(f"test_distributed_diagnosis.py:{line_of('# READS-RESULT')} in worker")
        assert rows[r]["collective"] == {"op": "all_reduce", "group": "WORLD", "seq": 1,
                                         "arrived": [0, 1, 3], "missing": [2]}
    text = str(info.value)
    assert "all_reduce #1 on group WORLD: arrived [0-1, 3], missing [2]" in text
    assert "rank 2 is ended" in text


def test_c6_ranks_call_collectives_in_different_orders():
    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        t = ctx.ones(4)
        if rank % 2 == 0:
            dist.all_reduce(t)
            dist.broadcast(t, src=0)
        else:
            dist.broadcast(t, src=0)
            dist.all_reduce(t)
        t.tolist()

    with pytest.raises(coopsim.SpawnException) as info:
        run(worker)
    errors = info.value.errors
    assert sorted(errors) == [0, 1, 2, 3]  # every member of the mismatched collective
    e = errors[0]
    assert isinstance(e, coopsim.CollectiveMismatchError)
    assert "op" in e.fields
    assert "ranks [0, 2]: op=all_reduce" in str(e) and "ranks [1, 3]: op=broadcast" in str(e)


@pytest.mark.parametrize("async_op", [False, True])
def test_c6_a_caught_mismatch_leaves_no_op_behind_and_the_group_goes_on(async_op):
    # PyTorch's ProcessGroupWrapper (TORCH_DISTRIBUTED_DEBUG=DETAIL) compares the fingerprints
    # before the backend op is issued (ProcessGroupWrapper.cpp, runCollectiveChecks): a
    # mismatch raises on every rank and runs nothing, so a program that catches it can use
    # the group again. Each member's stream op of the failed collective must not hold back
    # its stream.
    caught = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        t = ctx.ones(5 if rank == 0 else 4)
        work = None  # the last member to arrive raises at the call
        try:
            work = dist.all_reduce(t, async_op=async_op)
            if work is not None:
                work.wait()
            ctx.cuda.synchronize()
        except coopsim.CollectiveMismatchError as e:
            caught[rank] = e.fields
        u = ctx.ones(3) * (rank + 1)
        dist.all_reduce(u)
        assert u.tolist() == [10.0] * 3
        if work is not None:  # the failed op's Work ended with the error
            assert work.is_completed() and isinstance(work.exception(), coopsim.CollectiveMismatchError)

    run(worker)
    assert caught == {r: ["shapes"] for r in range(4)}


def test_c6_all_gather_with_mismatched_shapes_then_a_barrier():
    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        n = 4 if rank != 3 else 5
        t = ctx.ones(n)
        out = [ctx.zeros(n) for _ in range(4)]
        dist.all_gather(out, t)
        dist.barrier()

    with pytest.raises(coopsim.SpawnException) as info:
        run(worker)
    e = info.value.errors[info.value.error_index]
    assert isinstance(e, coopsim.CollectiveMismatchError) and e.fields == ["shapes"]
    assert "ranks [3]: op=all_gather, seq=1, shapes=[(5,), (5,), (5,), (5,), (5,)]" in str(e)


def test_c7_a_rank_stuck_in_a_collective_while_the_others_enter_teardown_barrier():
    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        pair = dist.new_group([0, 1])
        if rank == 0:
            t = ctx.ones(2)
            dist.all_reduce(t, group=pair)
            t.tolist()  # STUCK-HERE
        dist.barrier()  # TEARDOWN
        dist.destroy_process_group()

    with pytest.raises(coopsim.DeadlockError) as info:
        run(worker)
    rows = {r["rank"]: r for r in info.value.report["ranks"]}
    assert rows[0]["collective"]["missing"] == [1] and rows[0]["collective"]["group"] == "group1"
    assert rows[1]["collective"] == {"op": "barrier", "group": "WORLD", "seq": 1,
                                     "arrived": [1, 2, 3], "missing": [0]}
    text = str(info.value)
    assert f"rank 0 is blocked at {__file__}:{line_of('# STUCK-HERE')} in worker" in text
    assert f"rank 1 is blocked at {__file__}:{line_of('# TEARDOWN')} in worker" in text


def _blocking_sends_first(rank, ctx, backend):
    dist = ctx.distributed
    dist.init_process_group(backend)
    peer = 1 - rank
    out, inp = ctx.ones(3), ctx.zeros(3)
    dist.send(out, dst=peer)
    dist.recv(inp, src=peer)


def test_c7_c11_every_rank_blocking_sends_first_under_gloo_blocks_the_hosts():
    with pytest.raises(coopsim.DeadlockError) as info:
        run(_blocking_sends_first, nprocs=2, args=("gloo",))
    text = str(info.value)
    assert "point-to-point wait-for cycle: rank 0 send(dst=1) -> rank 1 send(dst=0) -> rank 0" in text
    assert "p2p semantics: under gloo, send() blocks the host until the peer has posted" in text
    assert [r["cycle"] for r in info.value.report["ranks"]] == [[0, 1], [0, 1]]


def test_c7_c11_every_rank_blocking_sends_first_under_nccl_hangs_on_the_pair_stream():
    with pytest.raises(coopsim.DeadlockError) as info:
        run(_blocking_sends_first, nprocs=2, args=("nccl",))
    text = str(info.value)
    assert [r["state"] for r in info.value.report["ranks"]] == ["ended", "ended"]
    assert "rank 0 send(dst=1) at " in text and "matched by rank 1's recv(src=0), but the stream of rank 1 never reached" in text
    assert "p2p semantics: under nccl, each send/recv runs on its peer pair's stream" in text


def test_c6_a_rank_raises_while_the_others_are_inside_a_collective():
    finals = []

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        try:
            t = ctx.ones(16)
            if rank == 2:
                raise RuntimeError("rank 2 lost its data")
            dist.all_reduce(t)
            t.tolist()
        finally:
            finals.append(rank)

    with pytest.raises(coopsim.SpawnException) as info:
        run(worker)
    assert list(info.value.errors) == [2]
    assert "-- Process 2 terminated with the following error:" in info.value.msg
    assert sorted(finals) == [0, 1, 2, 3]


def _mismatched_send_recv(rank, ctx, backend):
    dist = ctx.distributed
    dist.init_process_group(backend)
    if rank == 0:
        dist.send(ctx.ones(3), dst=1)
    else:
        dist.recv(ctx.zeros(4), src=0)


def test_send_recv_size_mismatch_fails_both_ranks_under_gloo():
    with pytest.raises(coopsim.SpawnException) as info:
        run(_mismatched_send_recv, nprocs=2, args=("gloo",))
    assert sorted(info.value.errors) == [0, 1]
    assert "sends 3 elements of torch.float32" in str(info.value.errors[0])
    assert "expects 4 elements" in str(info.value.errors[1])


def test_send_recv_size_mismatch_under_nccl_fails_the_rank_still_running():
    with pytest.raises(coopsim.SpawnException) as info:  # nccl's send returned: rank 0 ended
        run(_mismatched_send_recv, nprocs=2, args=("nccl",))
    assert sorted(info.value.errors) == [1]
    assert "sends 3 elements of torch.float32" in str(info.value.errors[1])


def test_collective_timeout_in_virtual_time_while_the_simulation_advances():
    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group(timeout=datetime.timedelta(milliseconds=2))
        t = ctx.ones(8)
        if rank == 1:
            for _ in range(10):  # busy elsewhere for 10 ms of virtual time
                ctx.wait(ctx.sim.timer(1_000_000))
            return
        dist.all_reduce(t)
        t.tolist()

    with pytest.raises(coopsim.SpawnException) as info:
        run(worker, nprocs=2)
    e = info.value.errors[0]
    assert isinstance(e, coopsim.DistTimeoutError)
    assert ("Watchdog caught collective operation timeout: WorkCoopsim(SeqNum=1, OpType=ALL_REDUCE, "
            "NumelIn=8, NumelOut=8, Timeout(ms)=2) ran for 2 milliseconds before timing out") in str(e)
    assert "Missing ranks: [1]" in str(e)


def test_monitored_barrier_names_the_ranks_that_did_not_arrive():
    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        if rank in (1, 3):
            ctx.wait(ctx.sim.event("stuck forever"))
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=1), wait_all_ranks=True)

    with pytest.raises(coopsim.SpawnException) as info:
        run(worker)
    assert list(info.value.errors) == [0]
    assert str(info.value.errors[0]) == "[Rank 0]: Ranks 1, 3 failed to pass monitoredBarrier in 1000 ms"


@pytest.mark.parametrize("call, error, match", [
    (lambda d, ctx, r: d.send(ctx.ones(1), dst=r), ValueError, "destination rank should not be the same"),
    (lambda d, ctx, r: d.gather(ctx.ones(1), gather_list=[ctx.ones(1)] * 2, dst=1 - r) if r == 0 else None,
     ValueError, "must NOT be specified on non-destination ranks"),
    (lambda d, ctx, r: d.init_process_group(), ValueError, "initialize the default process group twice"),
    (lambda d, ctx, r: d.all_reduce(ctx.ones(2), op="sum"), ValueError, "op must be a"),
    (lambda d, ctx, r: d.all_reduce(ctx.ones(2), op=d.ReduceOp.BAND), ValueError, "Cannot use ReduceOp.BAND"),
])
def test_argument_errors_as_pytorch_raises_them(call, error, match):
    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        call(dist, ctx, rank)

    with pytest.raises(coopsim.SpawnException) as info:
        run(worker, nprocs=2)
    e = info.value.errors[info.value.error_index]
    assert isinstance(e, error) and match in str(e)


def test_init_process_group_contradicting_spawn_is_an_error():
    def worker(rank, ctx):
        ctx.distributed.init_process_group(world_size=3)

    with pytest.raises(coopsim.SpawnException) as info:
        run(worker, nprocs=2)
    assert "world_size=3 contradicts the spawn, which runs 2 ranks" in str(info.value.errors[0])


def test_calls_before_init_process_group_fail_like_torch():
    def worker(rank, ctx):
        ctx.distributed.all_reduce(ctx.ones(1))

    with pytest.raises(coopsim.SpawnException) as info:
        run(worker, nprocs=1)
    assert "Default process group has not been initialized" in str(info.value.errors[0])
