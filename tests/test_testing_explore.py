"""Schedule exploration and replay (coopsim.testing.explore, ctx.sim.explore/replay)."""

import pytest

from coopsim.testing import ScheduleFailure
from coopsim.testing.explore import parse_token


def racy(rank, ctx):
    """Rank 0 takes two messages with recv(src=None) and wrongly assumes rank 1's is first."""
    dist = ctx.distributed
    dist.init_process_group("gloo")
    t = ctx.zeros(1)
    if rank == 0:
        dist.recv(t)
        assert t.item() == 1.0, f"expected rank 1's message first, got {t.item()}"
        dist.recv(t)
    else:
        t.fill_(rank)
        dist.send(t, dst=0)


def correct(rank, ctx):
    dist = ctx.distributed
    dist.init_process_group("gloo")
    t = ctx.zeros(1)
    if rank == 0:
        got = sorted(dist.recv(t) for _ in range(2))
        assert got == [1, 2]
    else:
        t.fill_(rank)
        dist.send(t, dst=0)


def test_the_default_order_never_triggers_the_race(ctx):
    ctx.multiprocessing.spawn(racy, (ctx,), nprocs=3)
    assert ctx.sim.explore(racy, (ctx,), 3, schedules=1) == {"schedules": 1, "distinct": 1}


@pytest.mark.parametrize("strategy", ["random", "pct"])
def test_explore_finds_the_race_and_replays_it_bit_for_bit(ctx, strategy):
    with pytest.raises(ScheduleFailure) as found:
        ctx.sim.explore(racy, (ctx,), 3, schedules=100, seed=0, strategy=strategy)
    failure = found.value
    assert 0 < failure.index < 100
    assert failure.token.startswith(f"coopsim:{strategy}:seed=0:index={failure.index}")
    assert "expected rank 1's message first, got 2.0" in str(failure.error)
    assert failure.token in str(failure)
    with pytest.raises(ScheduleFailure) as replayed:
        ctx.sim.replay(failure.token, racy, (ctx,), 3)
    assert replayed.value.digest == failure.digest
    assert str(replayed.value.error) == str(failure.error)
    with pytest.raises(ScheduleFailure) as again:  # without fn: the latest exploration's program
        ctx.sim.replay(failure.token)
    assert again.value.digest == failure.digest


def test_explore_varies_the_schedule_and_a_correct_program_passes_them_all(ctx):
    for strategy in ("random", "pct"):
        result = ctx.sim.explore(correct, (ctx,), 3, schedules=20, seed=3, strategy=strategy)
        assert result["schedules"] == 20
        assert result["distinct"] > 1


def test_c9_same_seed_same_schedules_other_seed_other_schedules(ctx):
    def first_failure(seed):
        with pytest.raises(ScheduleFailure) as found:
            ctx.sim.explore(racy, (ctx,), 3, schedules=100, seed=seed, strategy="random")
        return found.value.index, found.value.digest

    assert first_failure(1) == first_failure(1)
    assert len({first_failure(seed)[1] for seed in range(4)}) > 1


def test_replay_of_a_passing_schedule_returns_its_digest(ctx):
    digest = ctx.sim.replay("coopsim:random:seed=5:index=3", correct, (ctx,), 3)
    assert digest == ctx.sim.replay("coopsim:random:seed=5:index=3", correct, (ctx,), 3)
    assert digest != ctx.sim.replay("coopsim:default", correct, (ctx,), 3)


def test_wildcard_receive_takes_each_senders_oldest_send_only(ctx):
    """Exploration may pick which sender a recv(src=None) takes, never reorder one sender."""
    def ordered(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group("gloo")
        t = ctx.zeros(1)
        if rank == 0:
            seen = {1: [], 2: []}
            for _ in range(4):
                seen[dist.recv(t)].append(t.item())
            assert seen == {1: [10.0, 11.0], 2: [20.0, 21.0]}
        else:
            works = [dist.isend(ctx.full((1,), 10.0 * rank + i), dst=0) for i in range(2)]
            for w in works:
                w.wait()

    assert ctx.sim.explore(ordered, (ctx,), 3, schedules=30, strategy="random")["distinct"] > 1


@pytest.mark.parametrize("token", ["", "coopsim:random:index=1", "nope:random:seed=0:index=1",
                                   "coopsim:fifo:seed=0:index=1", "coopsim:pct:seed=x:index=1"])
def test_a_malformed_token_is_rejected_naming_it(token):
    with pytest.raises(ValueError, match="replay token"):
        parse_token(token)


def test_explore_checks_its_arguments(ctx):
    with pytest.raises(ValueError, match="explored nothing yet"):
        ctx.sim.replay("coopsim:default")
    with pytest.raises(ValueError, match="schedules"):
        ctx.sim.explore(correct, (ctx,), 3, schedules=0)
    with pytest.raises(ValueError, match="strategy"):
        ctx.sim.explore(correct, (ctx,), 3, strategy="dfs")
    with pytest.raises(TypeError, match="args"):
        ctx.sim.explore(correct, [ctx], 3)
