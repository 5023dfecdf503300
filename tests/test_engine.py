"""The event core: ordering, alarms, streams; and the scheduler's interrupt primitive."""

import pytest

import coopsim
from coopsim.engine import Engine, Handle, Stream


def run(engine):
    while engine.step_instant():
        pass


def test_c9_same_instant_completes_in_scheduling_order():
    engine, order = Engine(), []
    for name in "abc":
        h = engine.schedule(Handle(name), 5.0)
        h.add_callback(lambda h: order.append(h.desc))
    engine.schedule(Handle("early"), 1.0).add_callback(lambda h: order.append(h.desc))
    run(engine)
    assert order == ["early", "a", "b", "c"]


def test_alarms_fire_only_while_other_work_advances_the_clock():
    engine = Engine()
    alarm = engine.alarm(Handle("timeout"), 10.0)
    assert engine.step_instant() is False and not alarm.done  # only an alarm: nothing can complete
    work = engine.timer(20.0)
    assert engine.step_instant() and alarm.done and alarm.time_ns == 10.0 and not work.done
    assert engine.step_instant() and work.done and engine.now_ns == 20.0


def test_stream_runs_ops_in_order_and_after_their_dependencies():
    engine = Engine()
    stream = Stream(engine, "s")
    gate = Handle("gate")
    log = []
    a = stream.enqueue(10.0, "a", fn=lambda: log.append(("a", engine.now_ns)))
    b = stream.enqueue(5.0, "b", fn=lambda: log.append(("b", engine.now_ns)), deps=(gate,))
    c = stream.enqueue(1.0, "c", fn=lambda: log.append(("c", engine.now_ns)))
    engine.schedule(gate, 30.0)
    run(engine)
    assert log == [("a", 10.0), ("b", 35.0), ("c", 36.0)]
    assert (a.time_ns, b.time_ns, c.time_ns) == (10.0, 35.0, 36.0)


def test_stream_work_op_completes_with_its_work():
    engine = Engine()
    stream = Stream(engine, "s")
    started = []

    def start():
        started.append(engine.now_ns)
        return engine.timer(7.0)

    op = stream.enqueue_work("work", start, delay_ns=3.0)
    after = stream.enqueue(1.0, "after")
    run(engine)
    assert started == [3.0] and op.time_ns == 10.0 and after.time_ns == 11.0


def test_interrupt_raises_in_each_blocked_rank_so_each_is_a_root_cause(ctx):
    events = {}

    def worker(rank, ctx):
        if rank < 2:
            events[rank] = ctx.sim.event(f"e{rank}")
            ctx.wait(events[rank])
        else:
            ctx.wait(ctx.sim.timer(1))
            for task in sorted(ctx.sim.runtime.tasks.values(), key=lambda t: t.key)[:2]:
                ctx.sim.runtime.interrupt(task, ValueError(f"interrupted {task.name}"))
            ctx.wait(ctx.sim.timer(1))

    with pytest.raises(coopsim.SpawnException) as info:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=3)
    assert list(info.value.errors) == [0, 1]
    assert str(info.value.errors[1]) == "interrupted rank 1"


def test_stream_op_after_a_completed_work_op_is_scheduled():
    engine = Engine()
    stream = Stream(engine, "s")
    stream.enqueue_work("work", lambda: engine.timer(4.0))
    run(engine)
    later = stream.enqueue(2.0, "later")
    run(engine)
    assert later.done and later.time_ns == 6.0
