"""The contracts under hostile user code: catch-and-continue (C3), interrupted and swallowed
aborts (C4). Each test reproduces one problem of issue 11."""

import datetime
import gc
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

import coopsim
from coopsim.errors import CollectiveMismatchError, DistTimeoutError
from coopsim.runtime.watchdog import EXIT_CODE as WATCHDOG_EXIT_CODE
from tests.conftest import live_coopsim_greenlets


def spawn(ctx, fn, nprocs, *args):
    return ctx.multiprocessing.spawn(fn, args=(ctx, *args), nprocs=nprocs)


def checked_wait(ctx, h, seen):
    """Wait on ``h`` and record whether C3 held on return (done, and the clock reached it)."""
    ctx.wait(h)
    seen.append(h.done and h.time_ns is not None and ctx.sim.now_ns() >= h.time_ns)


# --- C3: an error delivered to a task removes its wait registration --------------------------

def test_c3_error_thrown_into_a_rank_of_the_current_round_leaves_no_stale_registration(ctx):
    seen, errors = [], []

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        t = ctx.ones(4 + rank)  # rank 1's shape differs: a mismatch found by rank 1's arrival
        try:
            dist.all_reduce(t)
            checked_wait(ctx, ctx.sim.timer(600), seen)  # rank 0 registered here, same round
        except CollectiveMismatchError as e:
            errors.append(rank)
        checked_wait(ctx, ctx.sim.timer(10_100), seen)  # the stale 600 ns timer must not wake it

    spawn(ctx, worker, 2)
    assert sorted(errors) == [0, 1]
    assert seen == [True, True]


def test_c3_two_timeouts_at_one_instant_then_catch_and_wait_again(ctx):
    seen, errors = [], []

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group(timeout=datetime.timedelta(milliseconds=2))
        if rank == 1:  # never arrives; keeps the simulation going past both timeouts
            ctx.wait(ctx.sim.timer(10_000_000))
            return
        works = [dist.all_reduce(ctx.ones(4), async_op=True) for _ in range(2)]
        # a timeout makes an nccl Work's wait block the host (WorkNCCL::wait), where the error lands
        waits = [lambda: works[0].wait(datetime.timedelta(seconds=1)),
                 lambda: checked_wait(ctx, ctx.sim.timer(100), seen),
                 lambda: checked_wait(ctx, ctx.sim.timer(50_000), seen)]
        for wait in waits:  # both timeouts fire at 2 ms: one at each of the first two waits
            try:
                wait()
            except DistTimeoutError:
                errors.append(ctx.sim.now_ns())

    spawn(ctx, worker, 2)
    assert errors == [2e6, 2e6]
    assert seen == [True]


# --- C4: the abort completes whatever a task raises during it --------------------------------

@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit])
def test_c4_base_exception_in_a_finally_during_the_abort_does_not_stop_it(ctx, raised):
    finals, calls = [], []

    def worker(rank, ctx):
        calls.append(rank)
        try:
            ctx.wait(ctx.sim.timer(10))
            if rank == 0:
                raise ValueError("the original failure")
            ctx.wait(ctx.sim.event("never"))
            calls.append(("resumed", rank))  # must never run
        finally:
            finals.append(rank)
            if rank == 1:
                raise raised()

    with pytest.raises(coopsim.SpawnException) as info:
        spawn(ctx, worker, 4)
    assert isinstance(info.value.errors[0], ValueError)  # the original propagates
    assert sorted(finals) == [0, 1, 2, 3]
    assert live_coopsim_greenlets() == []
    calls.clear()
    spawn(ctx, lambda rank, ctx: calls.append(rank), 2)  # the context is clean
    assert calls == [0, 1]


def test_c4_real_sigint_twice_aborts_every_rank_and_propagates_the_first():
    finals = []

    def worker(rank, ctx):
        try:
            ctx.wait(ctx.sim.timer(10))
            if rank == 0:
                os.kill(os.getpid(), signal.SIGINT)
            ctx.wait(ctx.sim.event("never"))
        finally:
            finals.append(rank)
            if rank == 1:
                os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, during the abort

    with coopsim.RuntimeContext() as ctx:
        with pytest.raises(KeyboardInterrupt) as info:
            spawn(ctx, worker, 4)
        assert sorted(finals) == [0, 1, 2, 3]
        assert live_coopsim_greenlets() == []
        assert info.value.__traceback__ is not None
        finals.clear()
        spawn(ctx, lambda rank, ctx: finals.append(rank), 3)
        assert finals == [0, 1, 2]


def test_c4_a_cleanup_that_swallows_the_abort_is_discarded_and_never_runs_again():
    laps = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        try:
            ctx.wait(ctx.sim.timer(10))
            if rank == 0:
                raise ValueError("boom")
            ctx.wait(ctx.sim.event("never"))
        finally:
            while rank in (1, 2, 3):  # a "robust" cleanup: retries the barrier forever
                laps[rank] = laps.get(rank, 0) + 1
                try:
                    dist.barrier()
                    break
                except BaseException:
                    pass

    ctx = coopsim.RuntimeContext()
    with pytest.raises(coopsim.SpawnException) as info:
        spawn(ctx, worker, 4)
    assert list(info.value.errors) == [0]
    discarded = ctx.sim.runtime.scheduler.discarded
    assert sorted(t.rank for t in discarded.values()) == [1, 2, 3]
    assert "discarded" in "".join(getattr(info.value, "__notes__", []))
    frozen = dict(laps)
    assert all(n > 1 for n in frozen.values())
    spawn(ctx, lambda rank, ctx: ctx.wait(ctx.sim.timer(5)), 4)  # a later spawn: clean
    ctx.close()
    gc.collect()
    assert laps == frozen  # nothing of the discarded ranks ran again
    assert live_coopsim_greenlets() == []
    assert all(not g.dead for g in discarded)  # parked, not killed: see docs/adr/0018



# --- C7: a watchdog that cannot be swallowed --------------------------------------------------

SWALLOWING_PROGRAM = '''
import coopsim

def spin():
    while True:
        pass  # SPIN-HERE

def worker(rank, ctx):
    ctx.wait(ctx.sim.timer(1))
    if rank == 1:
        while True:  # a "robust" retry loop
            try:
                spin()
            except BaseException:
                pass
    ctx.wait(ctx.sim.event("never"))

with coopsim.RuntimeContext(watchdog_s=0.1, watchdog_grace_s=0.5) as ctx:
    ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=3)
'''


def test_c7_a_rank_that_swallows_the_watchdog_ends_the_process_with_the_report(tmp_path):
    script = tmp_path / "swallow.py"
    script.write_text(SWALLOWING_PROGRAM)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, str(script)], cwd=root, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == WATCHDOG_EXIT_CODE, done.stderr
    pass_line = SWALLOWING_PROGRAM.splitlines().index("        pass  # SPIN-HERE") + 1
    assert "rank 1 ran for more than 0.1 s" in done.stderr
    spins_at = re.search(rf"It spins at {re.escape(str(script))}:(\d+) in spin", done.stderr)
    assert spins_at and int(spins_at.group(1)) in (pass_line - 1, pass_line)
    assert "rank 0: waiting for event 'never' at" in done.stderr
    assert f"rank 2: runnable at {script}:" in done.stderr


def test_c7_watchdog_interrupts_again_a_rank_that_swallowed_the_first_interrupt():
    swallowed = []

    def spin():
        while True:
            pass

    def worker(rank, ctx):
        ctx.wait(ctx.sim.timer(1))
        if rank == 1:
            try:
                spin()
            except BaseException as e:
                swallowed.append(type(e).__name__)
            spin()  # the second interrupt is not caught
        ctx.wait(ctx.sim.event("never"))

    with coopsim.RuntimeContext(watchdog_s=0.1, watchdog_grace_s=60) as ctx:
        with pytest.raises(coopsim.WatchdogTimeout) as info:
            spawn(ctx, worker, 2)
    assert info.value.rank == 1
    assert swallowed == ["WatchdogInterrupt"]
    assert live_coopsim_greenlets() == []


def test_c7_watchdog_grace_is_validated():
    with pytest.raises(ValueError, match="watchdog_grace_s"):
        coopsim.RuntimeContext(watchdog_s=1, watchdog_grace_s=float("inf"))


def test_c4_close_completes_the_abort_then_raises_what_a_finally_raised():
    finals = []

    def worker(rank, ctx):
        try:
            ctx.wait(ctx.sim.event("never"))
        finally:
            finals.append(rank)
            if rank == 0:
                raise SystemExit(4)

    ctx = coopsim.RuntimeContext()
    running = ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=3, join=False)
    assert running.join(timeout=0) is False  # one round: every rank blocks in its wait
    with pytest.raises(SystemExit):
        ctx.close()
    assert finals == [0, 1, 2]
    assert ctx.sim.runtime.spawn is None
    assert live_coopsim_greenlets() == []


def test_c7_watchdog_stops_a_finally_that_spins_during_the_abort():
    def worker(rank, ctx):
        try:
            ctx.wait(ctx.sim.timer(1))
            if rank == 0:
                raise ValueError("the original failure")
            ctx.wait(ctx.sim.event("never"))
        finally:
            while rank == 1:  # a cleanup that never yields
                pass

    with coopsim.RuntimeContext(watchdog_s=0.1, watchdog_grace_s=60) as ctx:
        with pytest.raises(coopsim.SpawnException) as info:
            spawn(ctx, worker, 3)
    assert list(info.value.errors) == [0]  # the original; rank 1's cleanup was interrupted
    assert live_coopsim_greenlets() == []
