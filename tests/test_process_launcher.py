"""``ctx.multiprocessing.Process`` and friends: processes started then joined run as the
ranks of one spawn (docs/adr/0015); errors show as exit codes, stderr and ``sim_error``."""

import pytest

import coopsim


def start_all(ctx, target, n, *extra, mp=None):
    mp = mp or ctx.multiprocessing
    processes = [mp.Process(target=target, args=(rank, n, *extra)) for rank in range(n)]
    for p in processes:
        p.start()
    return processes


def test_processes_run_as_ranks_and_init_process_group_assigns_the_rank():
    seen = []

    def target(i, n, ctx):
        dist = ctx.distributed
        dist.init_process_group("gloo", init_method="tcp://10.1.1.20:23456", rank=n - 1 - i, world_size=n)
        t = ctx.ones(1) * dist.get_rank()
        dist.all_reduce(t)
        seen.append((i, dist.get_rank(), ctx.cuda.current_device(), t.item()))

    with coopsim.RuntimeContext("small") as ctx:
        processes = start_all(ctx, target, 3, ctx)
        assert [p.is_alive() for p in processes] == [True] * 3 and processes[0].exitcode is None
        assert [p.name for p in processes] == ["Process-1", "Process-2", "Process-3"]
        for p in processes:
            p.join()
    assert [p.exitcode for p in processes] == [0, 0, 0] and not processes[0].is_alive()
    assert sorted(seen) == [(0, 2, 2, 3.0), (1, 1, 1, 3.0), (2, 0, 0, 3.0)]
    assert len({p.pid for p in processes}) == 3


def test_a_raising_process_exits_1_its_blocked_sibling_is_terminated(capsys):
    def target(rank, n, ctx):
        ctx.distributed.init_process_group(rank=rank, world_size=n)
        if rank == 1:
            raise RuntimeError("boom in rank 1")
        ctx.distributed.barrier()

    with coopsim.RuntimeContext("small") as ctx:
        processes = start_all(ctx, target, 2, ctx)
        processes[1].join()
        processes[0].join()
    assert [p.exitcode for p in processes] == [-15, 1]
    assert isinstance(processes[0].sim_error, coopsim.SpawnException)
    err = capsys.readouterr().err
    assert "-- Process 1 terminated with the following error:" in err and "boom in rank 1" in err


def test_a_hung_process_exits_as_nccl_s_watchdog_aborts_it_with_the_report_on_stderr(capsys):
    def target(rank, n, ctx):
        ctx.distributed.init_process_group("gloo", rank=rank, world_size=n)
        ctx.distributed.recv(ctx.zeros(1), src=1 - rank)

    with coopsim.RuntimeContext("small") as ctx:
        processes = start_all(ctx, target, 2, ctx)
        for p in processes:
            p.join()
    assert [p.exitcode for p in processes] == [-6, -6]
    assert isinstance(processes[0].sim_error, coopsim.DeadlockError)
    assert "point-to-point wait-for cycle" in capsys.readouterr().err


def test_join_with_a_timeout_returns_and_a_later_join_finishes():
    def target(rank, n, ctx):
        for _ in range(50):
            ctx.wait(ctx.sim.timer(1_000))

    with coopsim.RuntimeContext("small") as ctx:
        processes = start_all(ctx, target, 2, ctx)
        processes[0].join(timeout=0)
        assert processes[0].is_alive() and processes[0].exitcode is None
        processes[0].join()
        processes[1].join()
    assert [p.exitcode for p in processes] == [0, 0]


def test_start_methods_and_get_context():
    with coopsim.RuntimeContext("small") as ctx:
        mp = ctx.multiprocessing
        assert mp.get_start_method(allow_none=True) is None
        mp.set_start_method("spawn")
        with pytest.raises(RuntimeError, match="context has already been set"):
            mp.set_start_method("fork")
        mp.set_start_method("fork", force=True)
        assert mp.get_start_method() == "fork"
        with pytest.raises(ValueError, match="cannot find context for 'thread'"):
            mp.get_context("thread")
        spawn = mp.get_context("spawn")
        p = spawn.Process(target=lambda: None)
        p.start()
        assert p.name == "SpawnProcess-1" and spawn.get_start_method() == "spawn"
        p.join()
        assert p.exitcode == 0
        with pytest.raises(AssertionError, match="cannot start a process twice"):
            p.start()


def test_queues_collect_results_from_workers_and_pass_values_between_ranks():
    with coopsim.RuntimeContext("small") as ctx:
        mp = ctx.multiprocessing
        results, handoff = mp.Queue(), mp.SimpleQueue()

        def target(rank, n):
            if rank == 0:
                got = handoff.get()  # blocks rank 0 only, until rank 1 puts
                results.put(("rank 0 got", got, ctx.sim.now_ns()))
            else:
                ctx.wait(ctx.sim.timer(5_000))
                handoff.put({"from": 1})
            results.put((rank, rank * rank))

        for p in start_all(ctx, target, 2):
            p.join()
        items = [results.get() for _ in range(results.qsize())]
        assert ("rank 0 got", {"from": 1}, 5_000.0) in items and (1, 1) in items and (0, 0) in items
        assert results.empty()
        with pytest.raises(RuntimeError, match="would block forever"):
            results.get()
        import queue
        with pytest.raises(queue.Empty):
            results.get(timeout=1)
