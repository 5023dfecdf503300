"""The core runtime: RuntimeContext.wait, spawn, rounds, errors, deadlock, watchdog."""

import inspect
import threading
import warnings
import weakref

import pytest
from greenlet import getcurrent, greenlet, settrace
from hypothesis import given, settings
from hypothesis import strategies as st

import coopsim
from tests.conftest import live_coopsim_greenlets


def spawn(ctx, fn, nprocs, *args):
    return ctx.multiprocessing.spawn(fn, args=(ctx, *args), nprocs=nprocs)


def line_of(marker: str) -> int:
    """Line number in this file of the line that contains ``marker``."""
    lines = inspect.getsource(inspect.getmodule(line_of)).splitlines()
    return next(i + 1 for i, line in enumerate(lines) if marker in line and "line_of" not in line)


class SwitchCounter:
    """Counts greenlet switches while active (greenlet.settrace)."""

    def __init__(self):
        self.count = 0

    def __enter__(self):
        self._old = settrace(self._trace)
        return self

    def _trace(self, event, args):
        if event in ("switch", "throw"):
            self.count += 1

    def __exit__(self, *exc):
        settrace(self._old)


# --- C2, C3: wait ---------------------------------------------------------------------------

def test_c2_pending_queue_exists_and_starts_empty(ctx):
    assert ctx.sim.runtime.pending_waits == []


def test_c2_wait_in_worker_defers_to_main_and_resumes_complete(ctx):
    seen = {}

    def worker(rank, ctx):
        if rank == 0:
            h = ctx.sim.timer(100)
            ctx.wait(h)
            seen["done_on_resume"] = h.done
            seen["now"] = ctx.sim.now_ns()
        else:  # runs in the same round, after rank 0 deferred its wait
            seen["pending_seen_by_rank1"] = [(r.rank, h.desc) for r, h in ctx.sim.runtime.pending_waits]

    spawn(ctx, worker, 2)
    assert seen["pending_seen_by_rank1"] == [(0, "timer(100 ns)")]
    assert seen["done_on_resume"] is True
    assert seen["now"] == 100.0
    assert ctx.sim.runtime.pending_waits == []


def test_c2_wait_on_complete_handle_in_worker_does_not_switch(ctx):
    counts = {}

    def worker(rank, ctx):
        h = ctx.sim.timer(5)
        ctx.wait(h)
        with SwitchCounter() as c:
            ctx.wait(h)
            ctx.wait(h)
        counts[rank] = c.count

    spawn(ctx, worker, 2)
    assert counts == {0: 0, 1: 0}


def test_c2_waiting_twice_in_main_drives_the_engine_once(ctx):
    h = ctx.sim.timer(50)
    ctx.wait(h)
    steps = ctx.engine.steps
    assert steps == 1 and ctx.engine.now_ns == 50.0
    ctx.wait(h)
    assert ctx.engine.steps == steps


def test_c2_wait_in_main_drives_until_the_handle_completes(ctx):
    early, late = ctx.sim.timer(10), ctx.sim.timer(30)
    ctx.wait(early)
    assert early.done and not late.done and ctx.sim.now_ns() == 10.0
    ctx.wait(late)
    assert ctx.sim.now_ns() == 30.0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(0, 50), max_size=6), min_size=1, max_size=5))
def test_c3_resume_invariant_handle_complete_and_time_matches(delays):
    violations = []

    def worker(rank, ctx):
        for d in delays[rank]:
            h = ctx.sim.timer(d)
            before = ctx.sim.now_ns()
            ctx.wait(h)
            if not h.done or ctx.sim.now_ns() != before + d:
                violations.append((rank, d))

    with coopsim.RuntimeContext() as ctx:
        spawn(ctx, worker, len(delays))
    assert violations == []


def test_c5_workers_blocking_in_one_round_all_resume_after_one_drain(ctx):
    resumed_at_step = {}

    def worker(rank, ctx):
        ctx.wait(ctx.sim.timer(10))
        resumed_at_step[rank] = ctx.engine.steps

    spawn(ctx, worker, 4)
    assert resumed_at_step == {0: 1, 1: 1, 2: 1, 3: 1}


def test_c5_rounds_run_in_ascending_rank_order_and_time_order(ctx):
    log = []

    def worker(rank, ctx):
        log.append(("start", rank))
        ctx.wait(ctx.sim.timer(30 - 10 * rank))  # rank 2 wakes first
        log.append(("wake", rank, ctx.sim.now_ns()))

    spawn(ctx, worker, 3)
    assert log == [("start", 0), ("start", 1), ("start", 2),
                   ("wake", 2, 10.0), ("wake", 1, 20.0), ("wake", 0, 30.0)]


def test_c5_nothing_is_scheduled_in_the_virtual_past(ctx):
    ctx.wait(ctx.sim.timer(100))
    with pytest.raises(ValueError, match="virtual past"):
        ctx.engine.schedule(coopsim.engine.Handle("late"), 50.0)


def test_c1_only_the_scheduler_greenlet_advances_the_clock(ctx, monkeypatch):
    callers = []
    step = coopsim.engine.Engine.step_instant

    def spy(engine):
        callers.append(getcurrent())
        return step(engine)

    monkeypatch.setattr(coopsim.engine.Engine, "step_instant", spy)

    def worker(rank, ctx):
        ev = ctx.sim.event("go")
        if rank == 0:
            ev.set()  # a worker sets an event: schedules, never steps
        ctx.wait(ctx.sim.timer(rank + 1))

    main = getcurrent()
    spawn(ctx, worker, 3)
    assert callers and all(g is main for g in callers)


def test_c10_host_code_costs_no_virtual_time_and_names_carry_units(ctx):
    times = []

    def worker(rank, ctx):
        sum(i * i for i in range(20000))  # host work
        times.append(ctx.sim.now_ns())

    spawn(ctx, worker, 2)
    assert times == [0.0, 0.0]
    assert list(inspect.signature(ctx.sim.timer).parameters)[0] == "ns"


def test_timer_rejects_negative_and_nan(ctx):
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="ns must be a finite number >= 0"):
            ctx.sim.timer(bad)


def test_event_completes_when_set_and_only_once(ctx):
    order = []

    def worker(rank, ctx, ev):
        if rank == 0:
            ctx.wait(ev)
            order.append(("woke", ctx.sim.now_ns()))
        else:
            ctx.wait(ctx.sim.timer(40))
            ev.set()
            order.append("set")

    ev = ctx.sim.event("gate")
    spawn(ctx, worker, 2, ev)
    assert order == ["set", ("woke", 40.0)]
    with pytest.raises(RuntimeError, match="already set"):
        ev.set()


# --- C6: errors -----------------------------------------------------------------------------

def test_c6_exception_becomes_spawn_exception_with_pending_queue_cleared(ctx):
    def worker(rank, ctx):
        if rank == 2:
            raise ValueError("rank two is broken")
        ctx.wait(ctx.sim.event("never"))

    with pytest.raises(coopsim.SpawnException) as info:
        spawn(ctx, worker, 4)
    e = info.value
    assert isinstance(e, coopsim.ProcessRaisedException) and isinstance(e, coopsim.ProcessException)
    assert list(e.errors) == [2] and isinstance(e.errors[2], ValueError)
    assert e.error_index == 2
    assert ctx.sim.runtime.pending_waits == []


def test_c6_torch_message_format_with_every_root_cause(ctx):
    def worker(rank, ctx):
        if rank in (1, 3):
            raise RuntimeError(f"failure in rank {rank}")
        ctx.wait(ctx.sim.timer(10))

    with pytest.raises(coopsim.SpawnException) as info:
        spawn(ctx, worker, 4)
    e = info.value
    assert list(e.errors) == [1, 3] and e.error_index == 1
    assert e.msg == str(e)
    blocks = e.msg.split("\n\n-- Process ")
    assert blocks[0] == ""
    assert blocks[1].startswith("1 terminated with the following error:\nTraceback (most recent call last):\n")
    assert blocks[1].rstrip().endswith("RuntimeError: failure in rank 1")
    assert blocks[2].startswith("3 terminated with the following error:\n")
    assert e.pid == 2  # virtual pids count from 1 per context, so rank 1 of the first spawn


def test_c6_siblings_are_aborted_and_their_finally_and_with_blocks_run(ctx):
    cleaned = []

    class Resource:
        def __init__(self, rank):
            self.rank = rank

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            cleaned.append(("with", self.rank))

    def worker(rank, ctx):
        try:
            with Resource(rank):
                if rank == 0:
                    ctx.wait(ctx.sim.timer(5))
                    raise KeyError("late failure")
                ctx.wait(ctx.sim.event("never"))
        finally:
            cleaned.append(("finally", rank))

    with pytest.raises(coopsim.SpawnException) as info:
        spawn(ctx, worker, 3)
    assert list(info.value.errors) == [0]
    assert sorted(cleaned) == sorted([(k, r) for r in range(3) for k in ("with", "finally")])


def test_c6_a_finally_block_that_waits_cannot_block_an_aborted_rank(ctx):
    reached = []

    def worker(rank, ctx):
        try:
            if rank == 0:
                raise ValueError("x")
            ctx.wait(ctx.sim.event("never"))
        finally:
            if rank == 1:
                try:
                    ctx.wait(ctx.sim.timer(1))  # cleanup that waits: gets the abort again
                finally:
                    reached.append(rank)

    with pytest.raises(coopsim.SpawnException):
        spawn(ctx, worker, 2)
    assert reached == [1]
    assert live_coopsim_greenlets() == []


def test_c6_keyboard_interrupt_in_a_worker_propagates_unchanged(ctx):
    finals = []
    interrupt = KeyboardInterrupt("ctrl-c")

    def worker(rank, ctx):
        try:
            ctx.wait(ctx.sim.timer(10 * (rank + 1)))
            if rank == 0:
                raise interrupt
            ctx.wait(ctx.sim.event("never"))
        finally:
            finals.append(rank)

    with pytest.raises(KeyboardInterrupt) as info:
        spawn(ctx, worker, 3)
    assert info.value is interrupt
    assert sorted(finals) == [0, 1, 2]


def test_c6_keyboard_interrupt_in_main_during_spawn_propagates_unchanged(ctx):
    finals = []
    interrupt = KeyboardInterrupt()

    def ctrl_c(_handle):
        raise interrupt

    def worker(rank, ctx):
        try:
            h = ctx.sim.timer(10)
            if rank == 1:
                h.add_callback(ctrl_c)  # runs in main, inside the drain
            ctx.wait(h)
            ctx.wait(ctx.sim.event("never"))
        finally:
            finals.append(rank)

    with pytest.raises(KeyboardInterrupt) as info:
        spawn(ctx, worker, 2)
    assert info.value is interrupt
    assert sorted(finals) == [0, 1]


def test_c6_system_exit_propagates_unchanged(ctx):
    def worker(rank, ctx):
        raise SystemExit(3)

    with pytest.raises(SystemExit) as info:
        spawn(ctx, worker, 2)
    assert info.value.code == 3


# --- C7: deadlock and watchdog ----------------------------------------------------------------

def test_c7_deadlock_reports_each_rank_with_its_blocked_file_line(ctx):
    def worker(rank, ctx):
        if rank == 1:
            return
        ctx.wait(ctx.sim.timer(7))
        ctx.wait(ctx.sim.event(f"never-{rank}"))  # BLOCKS-HERE

    with pytest.raises(coopsim.DeadlockError) as info:
        spawn(ctx, worker, 3)
    report = info.value.report
    assert report["time_ns"] == 7.0
    rows = {r["rank"]: r for r in report["ranks"]}
    where = f"{__file__}:{line_of('# BLOCKS-HERE')} in worker"
    assert rows[0] == {"rank": 0, "task": "rank 0", "state": "blocked", "waits_for": "event 'never-0'",
                       "time_ns": 7.0, "where": where}
    assert rows[1]["state"] == "ended" and rows[1]["where"] is None
    assert rows[2]["where"] == where
    text = str(info.value)
    assert "2 of 3 ranks blocked" in text and "event 'never-2'" in text
    assert f"test_runtime.py:{line_of('# BLOCKS-HERE')}" in text


def test_c7_deadlock_in_main_names_the_waiting_line(ctx):
    with pytest.raises(coopsim.DeadlockError) as info:
        ctx.wait(ctx.sim.event("orphan"))  # MAIN-BLOCKS
    row = info.value.report["ranks"][0]
    assert row["waits_for"] == "event 'orphan'"
    assert row["where"].startswith(f"{__file__}:{line_of('# MAIN-BLOCKS')}")


def busy_loop():
    x = 0
    while True:  # BUSY-HERE
        x += 1


def test_c7_watchdog_names_the_busy_rank_and_its_line():
    finals = []

    def worker(rank, ctx):
        try:
            ctx.wait(ctx.sim.timer(1))
            if rank == 1:
                busy_loop()
            ctx.wait(ctx.sim.event("never"))
        finally:
            finals.append(rank)

    with coopsim.RuntimeContext(watchdog_s=0.2) as ctx:
        with pytest.raises(coopsim.WatchdogTimeout) as info:
            spawn(ctx, worker, 3)
    e = info.value
    assert e.rank == 1
    assert f"{__file__}:" in e.where and "in busy_loop" in e.where
    assert abs(int(e.where.split(":")[1].split()[0]) - line_of("# BUSY-HERE")) <= 1
    assert "rank 1" in str(e)
    assert sorted(finals) == [0, 1, 2]
    assert live_coopsim_greenlets() == []


def test_watchdog_off_by_default_and_validated():
    assert coopsim.RuntimeContext().watchdog_s is None
    with pytest.raises(ValueError, match="watchdog_s"):
        coopsim.RuntimeContext(watchdog_s=0)


# --- C4: no orphans -------------------------------------------------------------------------

def _outcome_success(rank, ctx):
    ctx.wait(ctx.sim.timer(3))


def _outcome_error(rank, ctx):
    if rank == 1:
        raise ValueError("boom")
    ctx.wait(ctx.sim.event("never"))


def _outcome_deadlock(rank, ctx):
    ctx.wait(ctx.sim.event("never"))


def _outcome_interrupt(rank, ctx):
    ctx.wait(ctx.sim.timer(1))
    if rank == 2:
        raise KeyboardInterrupt
    ctx.wait(ctx.sim.event("never"))


@pytest.mark.parametrize("body, expected", [
    (_outcome_success, None),
    (_outcome_error, coopsim.SpawnException),
    (_outcome_deadlock, coopsim.DeadlockError),
    (_outcome_interrupt, KeyboardInterrupt),
])
def test_c4_no_greenlet_survives_spawn(ctx, body, expected):
    refs, parents, finals = [], [], []

    def worker(rank, ctx):
        me = getcurrent()
        refs.append(weakref.ref(me))
        parents.append(me.parent)
        try:
            body(rank, ctx)
        finally:
            finals.append(rank)

    main = getcurrent()
    if expected is None:
        spawn(ctx, worker, 4)
    else:
        with pytest.raises(expected):
            spawn(ctx, worker, 4)
    assert all(p is main for p in parents) and len(parents) == 4
    assert sorted(finals) == [0, 1, 2, 3]
    assert all(r() is None or r().dead for r in refs)
    assert live_coopsim_greenlets() == []
    assert ctx.sim.runtime.tasks == {}


def test_c4_unjoined_spawn_is_aborted_when_the_context_closes():
    finals = []

    def worker(rank, ctx):
        try:
            while True:
                ctx.wait(ctx.sim.timer(1))
        finally:
            finals.append(rank)

    with coopsim.RuntimeContext() as ctx:
        pc = ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2, join=False)
        assert pc.join(timeout=0) is False
    assert sorted(finals) == [0, 1]
    assert live_coopsim_greenlets() == []


# --- C9: determinism ------------------------------------------------------------------------

def _program(rank, ctx, log):
    for i in range(5):
        ctx.wait(ctx.sim.timer((rank * 7 + i * 3) % 11 + 1))
        log.append((rank, i, ctx.sim.now_ns()))


@pytest.mark.parametrize("order", ["ascending", "shuffled"])
def test_c9_same_program_same_events_and_virtual_times(order):
    logs = []
    for _ in range(2):
        log = []
        with coopsim.RuntimeContext(seed=7, rank_order=order) as ctx:
            ctx.multiprocessing.spawn(_program, args=(ctx, log), nprocs=6)
            logs.append((log, ctx.engine.now_ns))
    assert logs[0] == logs[1]


def test_shuffled_order_is_a_seeded_permutation():
    def first_round(seed):
        log = []
        with coopsim.RuntimeContext(seed=seed, rank_order="shuffled") as ctx:
            ctx.multiprocessing.spawn(lambda rank: log.append(rank), nprocs=8)
        return log

    orders = {tuple(first_round(seed)) for seed in range(6)}
    assert all(sorted(o) == list(range(8)) for o in orders)
    assert len(orders) > 1
    assert first_round(3) == first_round(3)


# --- spawn API parity and misuse ----------------------------------------------------------

def test_spawn_returns_none_and_passes_rank_and_args(ctx):
    got = []
    assert ctx.multiprocessing.spawn(lambda rank, a, b: got.append((rank, a, b)), args=("x", 2), nprocs=3) is None
    assert got == [(0, "x", 2), (1, "x", 2), (2, "x", 2)]


def test_start_processes_has_the_same_behaviour(ctx):
    got = []
    assert ctx.multiprocessing.start_processes(lambda rank: got.append(rank), nprocs=2) is None
    assert got == [0, 1]


def test_spawn_warns_like_torch_for_another_start_method(ctx):
    with pytest.warns(FutureWarning, match=r"only supports start_method=spawn \(got: fork\)"):
        ctx.multiprocessing.spawn(lambda rank: None, nprocs=1, start_method="fork")


def test_join_false_returns_a_process_context_that_joins_with_timeout(ctx):
    def worker(rank, ctx):
        for _ in range(3):
            ctx.wait(ctx.sim.timer(1))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pc = ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2, join=False)
    assert isinstance(pc, ctx.multiprocessing.ProcessContext)
    assert [p.is_alive() for p in pc.processes] == [True, True]
    assert [p.exitcode for p in pc.processes] == [None, None]
    assert pc.join(timeout=0) is False  # one round, then the deadline has passed
    assert ctx.sim.now_ns() == 0.0 and not any(p.exitcode is not None for p in pc.processes)
    assert pc.join() is True
    assert [p.exitcode for p in pc.processes] == [0, 0]
    assert [p.name for p in pc.processes] == ["SpawnProcess-1", "SpawnProcess-2"]
    assert len(set(pc.pids())) == 2
    assert pc.join() is True


def test_process_exitcodes_after_failure(ctx):
    def worker(rank, ctx):
        if rank == 0:
            raise ValueError
        ctx.wait(ctx.sim.event("never"))

    pc = ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2, join=False)
    with pytest.raises(coopsim.SpawnException):
        pc.join()
    assert [p.exitcode for p in pc.processes] == [1, -15]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(fn=42), TypeError, "fn must be callable"),
    (dict(nprocs=0), ValueError, "nprocs must be an int >= 1"),
    (dict(nprocs=2.0), ValueError, "nprocs must be an int >= 1"),
    (dict(args=[1]), TypeError, "args must be a tuple"),
])
def test_spawn_rejects_bad_arguments(ctx, kwargs, error, match):
    call = dict(fn=lambda rank: None, args=(), nprocs=1)
    call.update(kwargs)
    with pytest.raises(error, match=match):
        ctx.multiprocessing.spawn(**call)


def test_spawn_from_inside_a_rank_is_an_error(ctx):
    def worker(rank, ctx):
        ctx.multiprocessing.spawn(lambda r: None, nprocs=1)

    with pytest.raises(coopsim.SpawnException) as info:
        spawn(ctx, worker, 1)
    assert "spawn called from inside rank 0" in str(info.value.errors[0])


def test_second_spawn_while_one_is_unjoined_is_an_error(ctx):
    ctx.multiprocessing.spawn(lambda r: None, nprocs=1, join=False)
    with pytest.raises(RuntimeError, match="not been joined"):
        ctx.multiprocessing.spawn(lambda r: None, nprocs=1)


def test_wait_from_another_thread_is_an_error(ctx):
    h = ctx.sim.timer(1)
    errors = []
    t = threading.Thread(target=lambda: errors.append(_capture(ctx.wait, h)))
    t.start()
    t.join()
    assert isinstance(errors[0], RuntimeError) and "belongs to the thread that created it" in str(errors[0])


def _capture(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - the test inspects it
        return e


def test_sequential_spawns_share_the_clock(ctx):
    spawn(ctx, lambda rank, ctx: ctx.wait(ctx.sim.timer(10)), 2)
    spawn(ctx, lambda rank, ctx: ctx.wait(ctx.sim.timer(5)), 2)
    assert ctx.sim.now_ns() == 15.0


def test_a_greenlet_that_is_not_a_rank_counts_as_main(ctx):
    done = []
    g = greenlet(lambda: done.append(ctx.wait(ctx.sim.timer(3)).time_ns))
    g.switch()
    assert done == [3.0]
