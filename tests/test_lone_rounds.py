"""Rounds of one task run in the scheduler's inner loop (docs/adr/0035-lone-task-rounds.md):
while a single task is runnable, its registration, the drain and its next round skip the
general loop's checks. Whatever else happens hands back to the general loop, so every
program here logs the same with the inner loop (``spawn``) as without it (a spawn joined
with a wall deadline runs only the general loop), and what the log must be is spelled out."""

from __future__ import annotations

import pytest

import coopsim
from coopsim.engine import Engine, Handle
from coopsim.errors import DeadlockError
from coopsim.runtime.scheduler import Scheduler, Task


def _run(program, nprocs, general, **options):
    log = []
    with coopsim.RuntimeContext(**options) as ctx:
        if general:  # a deadline: the general loop checks it after every round
            assert ctx.multiprocessing.spawn(program, args=(ctx, log), nprocs=nprocs,
                                             join=False).join(timeout=3600)
        else:
            ctx.multiprocessing.spawn(program, args=(ctx, log), nprocs=nprocs)
        log.append(("end", ctx.sim.now_ns()))
    return log


def _both(program, nprocs, **options):
    lean = _run(program, nprocs, False, **options)
    assert lean == _run(program, nprocs, True, **options)
    return lean


def test_c5_a_lone_task_runs_all_its_rounds_in_the_inner_loop(monkeypatch):
    calls = []
    inner = Scheduler._lone_rounds

    def spy(self, t):
        calls.append(t.rank)
        return inner(self, t)

    monkeypatch.setattr(Scheduler, "_lone_rounds", spy)

    def program(rank, ctx, log):
        for _ in range(50):
            ctx.wait(ctx.sim.timer(1))
            log.append(ctx.sim.now_ns())

    assert _run(program, 1, False) == [*map(float, range(1, 51)), ("end", 50.0)]
    assert calls == [0]  # one call ran the 50 rounds, and the end
    calls.clear()
    assert _run(program, 1, True)[-1] == ("end", 50.0) and calls == []


def test_c3_a_lone_task_whose_drain_queues_an_interrupt_hands_back_to_deliver_it():
    def program(rank, ctx, log):
        rt = ctx.sim.runtime
        if rank == 1:
            task = rt.current_task()
            h = ctx.sim.timer(3)  # completes while rank 0 runs alone; interrupts this rank
            h.add_callback(lambda _h: rt.interrupt(task, ValueError("stop")))
            try:
                ctx.wait(ctx.sim.event("never set"))
            except ValueError as e:
                log.append(("caught", str(e), ctx.sim.now_ns()))
            ctx.wait(ctx.sim.timer(1))
            log.append((1, ctx.sim.now_ns()))
            return
        for _ in range(5):
            ctx.wait(ctx.sim.timer(1))
            log.append((0, ctx.sim.now_ns()))

    assert _both(program, 2) == [
        (0, 1.0), (0, 2.0), ("caught", "stop", 3.0), (0, 3.0), (0, 4.0), (1, 4.0), (0, 5.0),
        ("end", 5.0)]


def test_c5_a_lone_tasks_drain_that_wakes_a_second_task_makes_a_round_of_two():
    def program(rank, ctx, log):
        ctx.wait(ctx.sim.timer(1 if rank == 0 else 3))
        log.append((rank, ctx.sim.now_ns()))
        for _ in range(3):
            ctx.wait(ctx.sim.timer(1))
            log.append((rank, ctx.sim.now_ns()))

    assert _both(program, 2) == [
        (0, 1.0), (0, 2.0), (0, 3.0), (1, 3.0), (0, 4.0), (1, 4.0), (1, 5.0), (1, 6.0),
        ("end", 6.0)]


def test_c5_a_task_a_lone_task_makes_runnable_runs_before_the_drain():
    def program(rank, ctx, log):
        rt = ctx.sim.runtime

        def extra():
            log.append(("extra", ctx.sim.now_ns()))
            ctx.wait(ctx.sim.timer(1))
            log.append(("extra", ctx.sim.now_ns()))

        for i in range(4):
            if i == 1:
                rt.add_task(Task("extra", None, (1,), ctx.sim.now_ns()), extra)
            ctx.wait(ctx.sim.timer(2))
            log.append((rank, ctx.sim.now_ns()))

    assert _both(program, 1) == [
        (0, 2.0), ("extra", 2.0), ("extra", 3.0), (0, 4.0), (0, 6.0), (0, 8.0), ("end", 8.0)]


def test_c5_a_lone_task_under_a_schedule_strategy_has_every_round_given_to_it():
    class Strategy:
        def __init__(self):
            self.rounds = []

        def round(self, batch):
            self.rounds.append([t.rank for t in batch])

        def choose(self, sends):
            return sends[0]

    def program(rank, ctx, log):
        if rank == 0:
            ctx.sim.runtime.strategy = strategy  # set by the task, between two of its rounds
        for _ in range(rank * 3 + 5):
            ctx.wait(ctx.sim.timer(1))

    for general in (False, True):
        strategy = Strategy()
        assert _run(program, 2, general) == [("end", 8.0)]
        assert strategy.rounds == [[0, 1]] * 5 + [[1]] * 3


@pytest.mark.parametrize("order", ["ascending", "shuffled"])
def test_c5_lone_rounds_draw_nothing_from_the_shuffle(order):
    def program(rank, ctx, log):
        ctx.wait(ctx.sim.timer(1 + 10 * (rank == 0)))  # rank 0 alone at the end
        for _ in range(3):
            log.append((rank, ctx.sim.now_ns()))
            ctx.wait(ctx.sim.timer(1 if rank else 4))

    log = _both(program, 4, rank_order=order, seed=7)
    assert sorted(log[:-4]) == [(r, t) for r in (1, 2, 3) for t in (1.0, 2.0, 3.0)]
    assert log[-4:] == [(0, 11.0), (0, 15.0), (0, 19.0), ("end", 23.0)]


def test_c7_a_lone_task_that_deadlocks_is_reported_as_before():
    def program(rank, ctx, log):
        ctx.wait(ctx.sim.timer(1))
        ctx.wait(ctx.sim.timer(1))
        ctx.wait(ctx.sim.event("never set"))

    with pytest.raises(DeadlockError) as info:
        _run(program, 1, False)
    row = info.value.report["ranks"][0]
    assert (row["rank"], row["waits_for"], row["time_ns"]) == (0, "event 'never set'", 2.0)


def test_c5_a_lone_task_with_the_watchdog_on_runs_in_the_general_loop(monkeypatch):
    monkeypatch.setattr(Scheduler, "_lone_rounds", None)  # never called with the watchdog on

    def program(rank, ctx, log):
        for _ in range(20):
            ctx.wait(ctx.sim.timer(1))
        log.append(ctx.sim.now_ns())

    assert _run(program, 1, False, watchdog_s=60) == [20.0, ("end", 20.0)]


def test_c5_work_a_callback_schedules_now_completes_in_the_same_step_after_the_instant():
    engine = Engine()
    log = []
    first = engine.timer(4)  # nothing else scheduled: the timer goes straight to a new instant
    second = engine.timer(4)
    later = engine.timer(6)
    first.add_callback(lambda h: log.append("first") or engine.schedule(
        Handle("now"), engine.now_ns).add_callback(lambda h: log.append("now")))
    second.add_callback(lambda h: log.append("second"))
    steps = engine.steps
    assert engine.step_instant() and engine.now_ns == 4.0 and engine.steps == steps + 1
    assert log == ["first", "second", "now"] and not later.done
    assert engine.step_instant() and later.time_ns == 6.0 and not engine.step_instant()
