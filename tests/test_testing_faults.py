"""Fault injection (coopsim.testing.faults, ctx.sim.faults): one test per kind, C9."""

import pytest

import coopsim
from coopsim.errors import DeadlockError, LinkDownError
from tests.conftest import live_coopsim_greenlets


def steps(rank, ctx, n=3, finish_ns=None):
    """n synchronous all-reduce steps; each rank notes when it finished."""
    dist = ctx.distributed
    dist.init_process_group("nccl")
    t = ctx.ones(1 << 14)
    for _ in range(n):
        (t * 2).sum()  # some device work of the rank's own
        dist.all_reduce(t)
        t.sum().item()
    if finish_ns is not None:
        finish_ns[rank] = ctx.sim.now_ns()


def finish_times(faults, nprocs=4):
    with coopsim.RuntimeContext() as ctx:
        ctx.sim.faults.load(faults)
        finish_ns = {}
        ctx.multiprocessing.spawn(steps, (ctx, 3, finish_ns), nprocs=nprocs)
        return finish_ns, ctx.sim.faults.fired


def test_kill_at_a_collective_leaves_the_peers_waiting_for_the_dead_rank(ctx):
    ctx.sim.faults.kill(2, at_collective=2)
    with pytest.raises(DeadlockError) as caught:
        ctx.multiprocessing.spawn(steps, (ctx,), nprocs=4)
    report = str(caught.value)
    assert "all_reduce #2 on group WORLD: arrived [0-1, 3], missing [2]" in report
    assert "faults injected (ctx.sim.faults):\n  kill rank 2 at its collective #2\n" \
           "  fired: killed rank 2 at its collective #2 (all_reduce)" in report
    record = caught.value.flight_record
    assert [r["collective_seq_id"] for r in record[2]] == [1]  # it never arrived at #2
    assert record[0][-1]["collective_seq_id"] == 2 and record[0][-1]["state"] != "completed"
    assert caught.value.faults == ctx.sim.faults.specs
    assert not live_coopsim_greenlets()


def test_kill_at_a_virtual_time_stops_the_rank_where_it_waits():
    baseline, _ = finish_times([])
    kill_at = baseline[0] / 2
    with coopsim.RuntimeContext() as ctx:
        ctx.sim.faults.kill(1, at_ns=kill_at)
        with pytest.raises(DeadlockError) as caught:
            ctx.multiprocessing.spawn(steps, (ctx,), nprocs=4)
    report = str(caught.value)
    assert f"fired: killed rank 1 at {kill_at:g} ns" in report
    assert "missing [1]" in report
    assert caught.value.report["ranks"][1]["state"] == "aborted"


def test_a_killed_rank_nobody_waits_for_ends_the_spawn_as_torchs_process_exited_exception(ctx):
    def two_of_three(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        pair = dist.new_group([0, 1])
        if rank == 2:
            ctx.wait(ctx.sim.timer(1_000_000))  # killed while it waits; nobody needs it
            return
        dist.all_reduce(ctx.ones(4), group=pair)

    ctx.sim.faults.kill(2, at_ns=500_000)
    with pytest.raises(coopsim.ProcessExitedException) as caught:
        ctx.multiprocessing.spawn(two_of_three, (ctx,), nprocs=3)
    e = caught.value
    assert (e.error_index, e.exit_code, e.signal_name) == (2, -9, "SIGKILL")
    assert str(e).startswith("process 2 terminated with signal SIGKILL")  # torch's words
    assert "fired: killed rank 2 at 500000 ns" in str(e)
    assert isinstance(e, coopsim.ProcessException)
    assert not live_coopsim_greenlets()


def test_a_slow_rank_delays_every_rank_at_the_collectives():
    baseline, _ = finish_times([])
    slowed, _ = finish_times("- {kind: slow, rank: 1, factor: 50}")
    for rank in range(4):  # everyone waits for rank 1 at each all-reduce
        assert slowed[rank] > baseline[rank] * 1.5


def test_a_degraded_link_slows_the_transfers_that_cross_it(ctx):
    def send(rank, ctx, done_ns):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        t = ctx.ones(1 << 20)
        if rank == 0:
            dist.send(t, dst=1)
        else:
            dist.recv(t, src=0)
            t[0].item()  # the host waits for the received data
            done_ns.append(ctx.sim.now_ns())

    def received_at(faults):
        with coopsim.RuntimeContext() as c:
            c.sim.faults.load(faults)
            done = []
            c.multiprocessing.spawn(send, (c, done), nprocs=2)
            return done[0]

    base = received_at([])
    slower = received_at([{"kind": "link", "src": 0, "dst": 1, "bandwidth_factor": 0.25}])
    later = received_at([{"kind": "link", "src": 0, "dst": 1, "latency_ns": 5000}])
    assert slower > 3 * base * 0.9
    assert later == pytest.approx(base + 5000)
    assert received_at([{"kind": "link", "src": 1, "dst": 0, "bandwidth_factor": 0.25}]) == base  # other direction


def test_a_down_link_fails_the_transfer_that_needs_it_naming_the_link(ctx):
    ctx.sim.faults.link(0, 1, down=True)
    with pytest.raises(LinkDownError, match=r"link \d+ \(dev0 -> dev1\) is down .*does not reroute") as caught:
        ctx.multiprocessing.spawn(steps, (ctx,), nprocs=4)
    assert caught.value.faults[0]["down"] is True
    assert not live_coopsim_greenlets()


def test_a_delayed_arrival_delays_the_peers_at_that_collective_only():
    baseline, _ = finish_times([])
    delayed, fired = finish_times([{"kind": "delay", "rank": 3, "collective": "all_reduce",
                                    "delay_ns": 1e6, "occurrence": 2}])
    assert fired == ["delayed rank 3 by 1e+06 ns at all_reduce call #2"]
    for rank in range(4):  # rank 3's device work of that step overlaps its delay
        assert baseline[rank] + 1e6 - baseline[rank] / 3 < delayed[rank] <= baseline[rank] + 1e6
    other, fired = finish_times([{"kind": "delay", "rank": 3, "collective": "barrier", "delay_ns": 1e6}])
    assert other == baseline and fired == []


def test_c9_identical_faults_give_identical_traces():
    faults = """
    - {kind: slow, rank: 1, factor: 3}
    - {kind: link, src: 2, dst: 3, bandwidth_factor: 0.5, latency_ns: 700}
    - {kind: delay, rank: 0, collective: all_reduce, delay_ns: 2500}
    """

    def trace(faults):
        with coopsim.RuntimeContext() as ctx:
            ctx.sim.faults.load(faults)
            with ctx.sim.trace() as recorder:
                ctx.multiprocessing.spawn(steps, (ctx,), nprocs=4)
            return recorder.events()

    assert trace(faults) == trace(faults)
    assert trace(faults) != trace([])


def test_faults_reach_every_explored_schedule(ctx):
    ctx.sim.faults.kill(3, at_collective=1)
    with pytest.raises(AssertionError, match="missing \\[3\\]") as caught:
        ctx.sim.explore(steps, (ctx,), 4, schedules=3)
    assert "kill rank 3 at its collective #1" in str(caught.value)


@pytest.mark.parametrize("spec, message", [
    ({"kind": "explode", "rank": 0}, "kind one of"),
    ({"kind": "kill", "rank": 0}, "exactly one of at_ns and at_collective"),
    ({"kind": "kill", "rank": 0, "at_ns": 1, "at_collective": 2}, "exactly one of"),
    ({"kind": "slow", "rank": 0, "factor": 0}, "factor must be > 0"),
    ({"kind": "slow", "rank": 99, "factor": 2}, "rank 99 does not exist on topology"),
    ({"kind": "delay", "rank": 0, "collective": "barrier"}, "takes keys"),
    ({"kind": "link", "src": 0, "dst": 1, "bandwidth_factor": -1}, "bandwidth_factor must be a number >= 0"),
    ({"kind": "kill", "rank": -1, "at_ns": 5}, "rank must be an int >= 0"),
])
def test_a_bad_fault_is_rejected_naming_the_key(ctx, spec, message):
    with pytest.raises(ValueError, match=message):
        ctx.sim.faults.load([spec])
    assert ctx.sim.faults.specs == []
