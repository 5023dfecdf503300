"""The lean issue path of a collective (docs/adr/0029): what it keeps, releases and records."""

import sys

from coopsim.engine import Engine, Handle, Stream


def test_work_ops_back_to_back_start_each_its_delay_after_the_one_before():
    engine = Engine()
    stream = Stream(engine, "s")
    gate = Handle("gate")
    started = []

    def work(ns):
        def start():
            started.append(engine.now_ns)
            return engine.timer(ns)
        return start

    first = stream.enqueue_work("first", work(7.0), delay_ns=3.0)  # 3 .. 10
    second = stream.enqueue_work("second", work(5.0), delay_ns=3.0)  # after first: 13 .. 18
    third = stream.enqueue_work("third", work(1.0), delay_ns=2.0, deps=(gate,))  # after gate (at 30)
    engine.schedule(gate, 30.0)
    while engine.step_instant():
        pass
    assert started == [3.0, 13.0, 32.0]
    assert (first.time_ns, second.time_ns, third.time_ns) == (10.0, 18.0, 33.0)


def test_c8_completed_collectives_let_go_of_their_buffers_and_leave_the_pending_list(ctx):
    seen = {}

    def rank(r, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        t = ctx.ones(4)
        for _ in range(20):
            dist.all_reduce(t)
        state = ctx.sim.runtime.spawn_state("distributed")
        seen[r, "open before"] = len(state.open_collectives(r))
        arrivals = list(state.pending[r])
        seen[r, "desc"] = (arrivals[0].done.member_desc, arrivals[-1].done.member_desc,
                           arrivals[-1].done.desc)
        assert t.sum().item() == 4 * 2 ** 20
        seen[r, "open after"] = len(state.open_collectives(r))
        seen[r, "buffers kept"] = sum(a.ins is not None or a.outs is not None for a in arrivals)
        # a done collective lets go of its arrivals: only its members' CollectiveOps stay
        seen[r, "arrivals kept"] = sum(len(a.done.collective.arrivals) for a in arrivals)
        seen[r, "tracked after"] = len(state.pending[r])  # the completed ones left at completion
        dist.all_reduce(t)
        seen[r, "tracked"] = len(state.pending[r])

    ctx.multiprocessing.spawn(rank, args=(ctx,), nprocs=2)
    for r in range(2):
        assert seen[r, "open before"] > 0 and seen[r, "open after"] == 0
        assert seen[r, "buffers kept"] == 0 and seen[r, "arrivals kept"] == 0
        assert seen[r, "tracked after"] == 0 and seen[r, "tracked"] == 1
        assert seen[r, "desc"] == (f"all_reduce #1 on group WORLD (rank {r})",
                                   f"all_reduce #20 on group WORLD (rank {r})",
                                   f"all_reduce #20 on group WORLD on dev{r}")


def test_the_flight_recorder_names_the_line_of_each_call(ctx):
    lines = []

    def rank(r, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        t = ctx.ones(2)
        lines.append(sys._getframe().f_lineno + 1)
        dist.all_reduce(t)
        lines.append(sys._getframe().f_lineno + 1)
        dist.all_reduce(t)
        t.sum().item()

    ctx.multiprocessing.spawn(rank, args=(ctx,), nprocs=2)
    for records in ctx.sim.flight_recorder.entries().values():
        assert [rec["frames"][0]["line"] for rec in records] == lines[:2]
        assert [rec["where"] for rec in records] == [f"{__file__}:{n} in rank" for n in lines[:2]]
        assert [rec["state"] for rec in records] == ["completed", "completed"]
