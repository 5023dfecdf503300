"""A context runs spawn after spawn whatever the earlier one did (nothing of it leaks), and
ops left incomplete when every rank has ended are reported (docs/adr/0015)."""

import datetime

import pytest

import coopsim


def first_spawn(rank, ctx, outcome):
    """Rank 0 enqueues an all_reduce that rank 1 never calls, then the spawn ends as told."""
    dist = ctx.distributed
    dist.init_process_group(timeout=datetime.timedelta(milliseconds=1))
    t = ctx.ones(4)
    if rank == 0:
        dist.all_reduce(t)
        dist.isend(ctx.ones(2), dst=1)  # never received
        if outcome == "timeout":
            t.tolist()  # fails with DistTimeoutError when the clock passes 1 ms
        return
    if outcome == "error":
        raise RuntimeError("rank 1 failed")
    if outcome == "deadlock":
        ctx.wait(ctx.sim.event("never set"))
    if outcome == "timeout":
        for _ in range(3):
            ctx.wait(ctx.sim.timer(1_000_000))
    if outcome == "KeyboardInterrupt":
        raise KeyboardInterrupt


def second_spawn(rank, ctx, out):
    dist = ctx.distributed
    dist.init_process_group()
    t = ctx.ones(4) * (rank + 1)
    dist.all_reduce(t)
    peer = 1 - rank
    got = ctx.zeros(2)
    ops = [lambda: dist.isend(ctx.full((2,), float(rank)), peer), lambda: dist.irecv(got, peer)]
    works = [op() for op in (ops if rank == 0 else ops[::-1])]  # one pair stream: same order
    for w in works:
        w.wait()
    out[rank] = (t.tolist(), got.tolist(), len(dist.group.WORLD.open_collectives()))


OUTCOMES = {"left incomplete": coopsim.DeadlockError, "error": coopsim.SpawnException,
            "deadlock": coopsim.DeadlockError, "timeout": coopsim.SpawnException,
            "KeyboardInterrupt": KeyboardInterrupt}


@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_c4_a_context_runs_a_clean_spawn_after_any_outcome(outcome):
    out = {}
    with coopsim.RuntimeContext("small") as ctx:
        with pytest.raises(OUTCOMES[outcome]):
            ctx.multiprocessing.spawn(first_spawn, args=(ctx, outcome), nprocs=2)
        ctx.multiprocessing.spawn(second_spawn, args=(ctx, out), nprocs=2)
    assert out == {0: ([3.0] * 4, [1.0, 1.0], 0), 1: ([3.0] * 4, [0.0, 0.0], 0)}


def test_a_skipped_collective_nobody_waits_on_is_reported_at_spawn_end():
    with coopsim.RuntimeContext("small") as ctx, pytest.raises(coopsim.DeadlockError) as info:
        ctx.multiprocessing.spawn(first_spawn, args=(ctx, "left incomplete"), nprocs=2)
    text = str(info.value)
    assert "every rank has ended, but these operations can never complete" in text
    assert "all_reduce #1 on group WORLD: arrived [0], missing [1]: ranks [1] ended without calling it" in text
    assert "rank 0 send(dst=1) at " in text and "no matching recv was posted by rank 1" in text
    rows = info.value.report["ranks"]
    assert [r["state"] for r in rows] == ["ended", "ended"]
    assert rows[0]["waits_for"].startswith("left incomplete: all_reduce #1 on group WORLD")


@pytest.mark.parametrize("backend", ["nccl", "gloo"])
def test_async_work_still_in_flight_when_ranks_end_is_not_flagged(backend):
    kept = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group(backend)
        t = ctx.ones(1 << 18) * (rank + 1)
        dist.all_reduce(t, async_op=True)  # nobody waits
        got = ctx.zeros(8)
        ops = [lambda: dist.isend(ctx.full((8,), float(rank)), 1 - rank), lambda: dist.irecv(got, 1 - rank)]
        for op in ops if rank == 0 else ops[::-1]:
            op()
        kept[rank] = (t, got)

    with coopsim.RuntimeContext("small") as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2)
        assert kept[0][0].tolist()[:2] == [3.0, 3.0] and kept[1][1].tolist() == [0.0] * 8
