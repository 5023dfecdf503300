"""A round handed on from task to task (docs/adr/0032-round-handoff.md): a task that blocks
resumes the round's next started task itself, so a wait costs one greenlet switch. These
tests pin what the scheduler's own loop guaranteed before: the round order, the start of
every task from the scheduler's stack, and the waits outside a round going to the scheduler."""

from __future__ import annotations

import sys

from greenlet import getcurrent, settrace

import coopsim
from coopsim.engine import Engine, Handle
from coopsim.runtime.scheduler import IDLE, Task


def test_c5_handed_on_round_keeps_rank_order_when_completions_come_out_of_order(ctx):
    log = []

    def worker(rank, ctx):
        if rank == 0:
            ctx.wait(ctx.sim.timer(5))
            ctx.wait(ctx.sim.timer(5))  # due at 10 after ranks 1 and 2's: completes last
        else:
            ctx.wait(ctx.sim.timer(10))
        for _ in range(3):  # every round at 10, 11, 12: all three, handed on in rank order
            log.append((ctx.sim.now_ns(), rank))
            ctx.wait(ctx.sim.timer(1))

    ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=3)
    assert log == [(t, r) for t in (10.0, 11.0, 12.0) for r in (0, 1, 2)]


def test_c5_a_task_made_runnable_mid_run_is_started_by_the_scheduler_in_its_place(ctx):
    rt = ctx.sim.runtime
    log = []

    def extra():
        log.append(("extra", ctx.sim.now_ns(), getcurrent().parent is scheduler_greenlet))
        ctx.wait(ctx.sim.timer(1))
        log.append(("extra", ctx.sim.now_ns(), True))

    def worker(rank, ctx):
        h = ctx.sim.timer(1)
        if rank == 1:  # at 1 ns, a fresh task ordered between ranks 0 and 1 joins the round
            h.add_callback(lambda _h: rt.add_task(Task("extra", 0, (0, 1), 1.0), extra))
        for _ in range(2):
            ctx.wait(h)
            log.append((rank, ctx.sim.now_ns()))
            h = ctx.sim.timer(1)

    scheduler_greenlet = getcurrent()
    ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2)
    assert log == [(0, 1.0), ("extra", 1.0, True), (1, 1.0),
                   (0, 2.0), ("extra", 2.0, True), (1, 2.0)]


def test_c4_thousands_of_ranks_each_start_on_the_scheduler_stack():
    # Started from the stack of the task before it, each rank would nest deeper: thousands
    # of ranks would exceed the recursion limit in the first round.
    depths = set()

    def worker(rank, ctx):
        depths.add(len(_frames()))
        ctx.wait(ctx.sim.timer(1))
        ctx.wait(ctx.sim.timer(1))

    with coopsim.RuntimeContext() as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=max(3000, sys.getrecursionlimit() + 1))
        assert ctx.sim.now_ns() == 2.0
    assert len(depths) == 1


def _frames() -> list:
    frame, frames = sys._getframe(1), []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames


def test_c2_a_wait_in_a_round_costs_one_switch():
    nranks, waits = 4, 50
    switches = [0]

    def count(event, _args):
        if event == "switch":
            switches[0] += 1

    def worker(rank, ctx):
        for _ in range(waits):
            ctx.wait(ctx.sim.timer(1))

    with coopsim.RuntimeContext() as ctx:
        old = settrace(count)
        try:
            ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=nranks)
        finally:
            settrace(old)
    # rounds after the first: the scheduler resumes rank 0, each rank hands on, the last
    # switches back (nranks + 1 switches); the first round starts each rank from the
    # scheduler and the last one resumes each to its end (2 * nranks each)
    assert switches[0] == (waits - 1) * (nranks + 1) + 4 * nranks


def test_c3_a_task_that_catches_an_interrupt_and_waits_again_blocks_outside_a_round(ctx):
    rt = ctx.sim.runtime
    log = []
    tasks = {}

    def worker(rank, ctx):
        tasks[rank] = rt.current_task()
        if rank == 0:
            try:
                ctx.wait(ctx.sim.event("never set"))
            except ValueError as e:  # thrown between rounds: this wait goes to the scheduler
                log.append(("caught", str(e), ctx.sim.now_ns()))
                h = ctx.sim.timer(2)
                ctx.wait(h)
                log.append(("resumed", h.done, ctx.sim.now_ns()))
        else:
            ctx.wait(ctx.sim.timer(5))
            if rank == 1:  # delivered after this round, before the next drain
                rt.interrupt(tasks[0], ValueError("stop"))
            ctx.wait(ctx.sim.timer(1))
            log.append((rank, ctx.sim.now_ns()))
            ctx.wait(ctx.sim.timer(1))
            log.append((rank, ctx.sim.now_ns()))

    ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=3)
    assert log == [("caught", "stop", 5.0), (1, 6.0), (2, 6.0),
                   ("resumed", True, 7.0), (1, 7.0), (2, 7.0)]
    assert rt.pending_waits == [] and ctx.sim.runtime.scheduler.batch == IDLE


def test_c5_a_timer_due_at_an_instant_already_completed_goes_to_a_fresh_bucket():
    # Engine.timer keeps the bucket it last filled; completing that instant must forget it,
    # or a zero-delay timer made at that instant would join a list nobody reads again.
    engine = Engine()
    first = [engine.timer(5), engine.timer(5)]
    assert engine.step_instant() and engine.now_ns == 5.0 and all(h.done for h in first)
    again = engine.timer(0)
    assert isinstance(again, Handle)
    later = engine.schedule(Handle("scheduled"), 7.0)
    same = engine.timer(2)  # due at 7, after ``later``: scheduling order within an instant
    assert engine.step_instant() and again.done and again.time_ns == 5.0 and not later.done
    order = []
    later.add_callback(lambda h: order.append("later"))
    same.add_callback(lambda h: order.append("timer"))
    assert engine.step_instant() and order == ["later", "timer"] and engine.peek_ns() is None
