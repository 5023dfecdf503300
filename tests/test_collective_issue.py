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


def test_a_work_op_may_be_its_own_work():
    """``enqueue_work(op=h)`` whose start returns ``h``: the op completes when its owner
    completes ``h`` (a collective's member part), and the stream's next op follows it."""
    engine = Engine()
    stream = Stream(engine, "s")
    own = Handle("own")
    started = []

    def start():
        started.append(engine.now_ns)
        engine.schedule(own, engine.now_ns + 4.0)  # the owner completes it later
        return own

    op = stream.enqueue_work(None, start, delay_ns=3.0, op=own)
    after = stream.enqueue(2.0, "after")
    while engine.step_instant():
        pass
    assert op is own and started == [3.0]
    assert (own.time_ns, after.time_ns) == (7.0, 9.0)


def test_c7_a_collectives_stream_op_is_its_member_part_and_names_both(ctx):
    """One handle per member and call: the host read waits on the member's part itself,
    whose ``desc`` is the stream op's and ``member_desc`` the member's."""
    seen = {}

    def rank(r, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        t = ctx.ones(4)
        dist.all_reduce(t)
        op = t._storage.last_write
        seen[r] = (op, op.desc, op.member_desc, op.collective.kind)
        t.sum().item()

    ctx.multiprocessing.spawn(rank, args=(ctx,), nprocs=2)
    for r in range(2):
        op, desc, member_desc, kind = seen[r]
        assert (desc, member_desc, kind) == (f"all_reduce #1 on group WORLD on dev{r}",
                                             f"all_reduce #1 on group WORLD (rank {r})", "all_reduce")
        assert op.done and op.time_ns > 0


def test_identical_collectives_share_one_plan_and_any_difference_makes_another(ctx):
    """Plans are cached per (kind, reduce op, root, count, dtype, devices): a hit must be the
    same collective in all of these, so the numbers stay right whatever the order."""
    plans, values = {}, {}

    def rank(r, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        low, high = dist.new_group([0, 1]), dist.new_group([2, 3])
        mine = low if r < 2 else high
        a, b = ctx.ones(4) * (r + 1), ctx.ones(8) * (r + 1)
        c = ctx.ones(4, dtype=ctx.float64) * (r + 1)
        calls = [("sum4", lambda: dist.all_reduce(a)), ("sum4 again", lambda: dist.all_reduce(a)),
                 ("max4", lambda: dist.all_reduce(a, op=dist.ReduceOp.MAX)),
                 ("sum8", lambda: dist.all_reduce(b)), ("f64", lambda: dist.all_reduce(c)),
                 ("bcast0", lambda: dist.broadcast(a, 0)), ("bcast1", lambda: dist.broadcast(a, 1)),
                 ("pair", lambda: dist.all_reduce(a, group=mine))]
        for name, call in calls:
            t = b if name == "sum8" else c if name == "f64" else a
            t.fill_(r + 1)
            call()
            op = t._storage.last_write
            values[r, name] = t.tolist()[0]
            plans[r, name] = op.collective.plan

    ctx.multiprocessing.spawn(rank, args=(ctx,), nprocs=4)
    for r in range(4):
        assert plans[r, "sum4"] is plans[r, "sum4 again"] is plans[0, "sum4"]
        distinct = [plans[r, n] for n in ("sum4", "max4", "sum8", "f64", "bcast0", "bcast1", "pair")]
        assert len({id(p) for p in distinct}) == len(distinct)
        assert values[r, "sum4"] == values[r, "sum4 again"] == 10 and values[r, "max4"] == 4
        assert values[r, "sum8"] == values[r, "f64"] == 10
        assert values[r, "bcast0"] == 1 and values[r, "bcast1"] == 2
        assert values[r, "pair"] == (3 if r < 2 else 7)
    assert plans[0, "pair"] is plans[1, "pair"] is not plans[2, "pair"]
    assert plans[0, "pair"].devices == [0, 1] and plans[2, "pair"].devices == [2, 3]
