"""Per-rank state kept lean at scale (docs/adr/0030-ranks-at-scale.md): ``RankMap`` behaves as
the dict it replaces, ``ProcessGroup`` numbers collectives per member without per-rank dicts
for ``0..size-1``, and a spawned rank's process keeps only its task."""

import gc
import random

import pytest

import coopsim
from coopsim.distributed.group import ProcessGroup
from coopsim.distributed.state import RankMap


def test_a_rank_map_does_what_a_dict_does():
    rng = random.Random(7)
    mine, ref = RankMap(6), {}
    for _ in range(400):
        r, op = rng.randrange(6), rng.choice("sgdcx")
        if op == "s":
            mine[r] = ref[r] = rng.random()
        elif op == "g":
            assert mine.get(r, "none") == ref.get(r, "none")
        elif op == "d":
            if r in ref:
                del mine[r], ref[r]
            else:
                with pytest.raises(KeyError):
                    del mine[r]
        elif op == "c":
            assert mine.setdefault(r, [r]) == ref.setdefault(r, [r])
        assert (r in mine) == (r in ref)
        assert list(mine) == sorted(ref) and len(mine) == len(ref)
    for outside in (-1, 6, "1", None, 1.0):
        assert outside not in mine and mine.get(outside) is None
        with pytest.raises(KeyError):
            mine[outside]
        with pytest.raises(KeyError):  # a list would take -1 as its last slot
            mine[outside] = "no"
    mine[2] = "x"
    assert mine[True + 1] == mine.get(2) == "x" and (True + 1) in mine


@pytest.mark.parametrize("ranks", [range(5), [1, 3, 4], [0, 1, 2, 3, 4][::-1]])
def test_a_group_maps_ranks_to_members_and_numbers_each_member_s_calls(ranks):
    g = ProcessGroup(1, ranks, None, "g")
    for i, r in enumerate(g.ranks):
        assert g.member(r) == i
        assert [g.next_seq(g.member(r)) for _ in range(3)] == [1, 2, 3]
    for outside in (-1, 7, 2.5, None.__class__):
        assert g.member(outside) == -1
    assert g.member(True) == g.member(1)  # as the dict it replaces: True == 1


def test_spawned_processes_are_named_by_their_rank():
    with coopsim.RuntimeContext("small") as ctx:
        running = ctx.multiprocessing.spawn(lambda rank: None, nprocs=3, join=False)
        assert [p.name for p in running.processes] == ["SpawnProcess-1", "SpawnProcess-2",
                                                      "SpawnProcess-3"]
        running.join()
        assert [p.exitcode for p in running.processes] == [0, 0, 0]


def _switch(n):
    return {"name": f"switch{n}", "max_devices": n, "device_kinds": {"gpu": {
        "memory_bytes": 1 << 34, "memory_bandwidth_GBps": 1000, "peak_flops": {"float32": 1e13},
        "launch_overhead_ns": 4000}}, "devices": [{"kind": "gpu", "count": n}],
        "links": [{"pattern": "switch", "bandwidth_GBps": 50, "latency_ns": 700}]}


def _objects_left(nprocs):
    """Objects the garbage collector tracks that a spawn leaves alive in its context."""
    def rank(r, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        t = ctx.zeros(2)
        for _ in range(2):
            dist.all_reduce(t)
        dist.barrier()
        t.tolist()

    with coopsim.RuntimeContext(_switch(300), ccl={"model": "analytic"}) as ctx:
        gc.collect()
        before = len(gc.get_objects())
        ctx.multiprocessing.spawn(rank, args=(ctx,), nprocs=nprocs)
        gc.collect()
        return len(gc.get_objects()) - before


def test_a_finished_spawn_leaves_few_objects_per_rank_for_the_collector():
    # what a rank leaves (its task, flight record, last stream op...) is walked by the
    # collection after the run: done collectives keep no arrivals, the flight recorder no
    # per-rank lists or site tuples, zeros() no process state (docs/adr/0030-ranks-at-scale.md);
    # 25 a rank before, 13 after; 16 since each device keeps its NCCL communicator stream, that
    # stream's last op and its description (made once per device and group name, reused by the
    # next spawn), while the default stream keeps the last collective it waited for
    per_rank = (_objects_left(300) - _objects_left(100)) / 200
    assert per_rank <= 17


def test_a_rank_s_pending_collectives_leave_in_order_and_out_of_order_ones_lazily():
    """DistState keeps a rank's open collectives in a plain list (ADR-0036): settled ones
    leave from the front, one completed out of order leaves once those before it did."""
    from types import SimpleNamespace as NS

    from coopsim.distributed.state import DistState

    state = NS(pending=[None, None])
    task = NS(rank=1)
    arrivals = [NS(task=task, done=NS(done=False)) for _ in range(4)]
    for a in arrivals:
        DistState.track(state, 1, a)
    assert state.pending[1] == arrivals and DistState.open_collectives(state, 0) == []
    arrivals[1].done.done = True  # out of order: stays until the first leaves
    DistState.settle(state, arrivals[1])
    assert state.pending[1] == arrivals and DistState.open_collectives(state, 1) == [arrivals[0], *arrivals[2:]]
    arrivals[0].done.done = True
    DistState.settle(state, arrivals[0])  # takes the completed one behind it too
    assert state.pending[1] == arrivals[2:]
    arrivals[2].done.done = arrivals[3].done.done = True
    fresh = NS(task=task, done=NS(done=False))
    DistState.track(state, 1, fresh)  # the completed front leaves as a new one comes
    assert state.pending[1] == [fresh] and DistState.open_collectives(state, 1) == [fresh]


def test_a_context_makes_only_the_devices_its_ranks_use():
    """Runtime.devices makes each SimDevice on first read (runtime/devicelist.py, ADR-0036):
    one per device ever after, all of them when iterated, none for an unused device."""
    def rank(r, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        t = ctx.ones(2)
        dist.all_reduce(t)
        assert t.tolist() == [2.0, 2.0]

    with coopsim.RuntimeContext(_switch(64), ccl={"model": "analytic"}) as ctx:
        devices = ctx.sim.runtime.devices
        assert len(devices) == 64 and devices.made() == []
        ctx.multiprocessing.spawn(rank, args=(ctx,), nprocs=2)
        assert [d.index for d in devices.made()] == [0, 1]
        assert devices[1] is devices.made()[1] and devices[-1] is devices[63]
        assert devices[0].stream.last.done and ctx.cuda.device_count() == 64
        assert [d.index for d in devices] == list(range(64)) and len(devices.made()) == 64
        with pytest.raises(IndexError):
            devices[64]
