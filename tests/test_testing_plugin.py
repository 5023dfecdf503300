"""The pytest plugin, run as an installed package would run it: in a subprocess pytest that
finds it through the ``pytest11`` entry point of this project's pyproject.toml."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FAST = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")  # hypothesis costs seconds per session

RACY = """
    import pytest

    from tests.test_testing_explore import racy  # wrongly assumes rank 1's message comes first

    @pytest.mark.coopsim(nprocs=3, schedules=SCHEDULES, strategy="pct")
    def test_first_message_is_from_rank_one(rank, ctx, tmp_path):
        assert tmp_path.exists()  # other fixtures still reach the ranks
        racy(rank, ctx)
"""


@pytest.fixture
def installed(pytester, monkeypatch):
    """A subprocess pytest that sees this worktree's coopsim as an installed distribution:
    its package on PYTHONPATH and a dist-info whose entry points come from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dist_info = pytester.path / "site" / f"coopsim-{project['version']}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: coopsim\nVersion: {project['version']}\n")
    entry_points = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
                           for group, eps in project["entry-points"].items())
    (dist_info / "entry_points.txt").write_text(entry_points)
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}:{dist_info.parent}")
    return pytester


def test_pyproject_registers_the_plugin_through_pytest11():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"coopsim": "coopsim.testing.plugin"}


def test_a_marked_test_runs_as_a_spawn_and_passes_with_one_schedule(installed):
    installed.makepyfile(test_race=RACY.replace("SCHEDULES", "1"))
    installed.makepyfile(test_ranks="""
        import pytest

        pytestmark = pytest.mark.coopsim(nprocs=3)

        def test_a_module_marker_applies_too(rank, ctx):
            assert ctx.sim.runtime.spawn.ranks[rank].rank == rank
            assert len(ctx.sim.runtime.spawn.ranks) == 3

        @pytest.mark.coopsim(nprocs=4, topology="ring8")
        def test_every_rank_runs(rank, ctx):
            dist = ctx.distributed
            dist.init_process_group("nccl")
            assert ctx.sim.runtime.topology.name == "ring8"
            t = ctx.ones(2) * (rank + 1)
            dist.all_reduce(t)
            assert t.tolist() == [10.0, 10.0]
    """)
    result = installed.runpytest_subprocess(*FAST)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["plugins: *coopsim-0.1.0*"])  # loaded through its entry point


def test_a_found_race_shows_the_report_and_a_token_and_the_token_replays_it(installed):
    installed.makepyfile(test_race=RACY.replace("SCHEDULES", "1"))
    result = installed.runpytest_subprocess(*FAST, "--coopsim-schedules=100")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "coopsim: ScheduleFailure in test_first_message_is_from_rank_one (nprocs=3" in out
    assert "expected rank 1's message first, got 2.0" in out
    assert "in _loop" not in out and "join_spawn" not in out  # no traceback through the scheduler
    token = re.search(r"--coopsim-replay=(\S+)", out).group(1)
    assert token.startswith("coopsim:pct:seed=0:")

    replayed = installed.runpytest_subprocess(*FAST, f"--coopsim-replay={token}")
    replayed.assert_outcomes(failed=1)
    assert "expected rank 1's message first, got 2.0" in replayed.stdout.str()


def test_failures_show_coopsim_reports_and_leaks_fail_naming_the_greenlet(installed):
    installed.makepyfile(test_hang="""
        import pytest

        @pytest.mark.coopsim(nprocs=2)
        def test_rank_one_skips_the_barrier(rank, ctx):
            ctx.distributed.init_process_group("nccl")
            if rank == 0:
                ctx.distributed.barrier()

        @pytest.mark.coopsim(nprocs=2, faults="- {kind: kill, rank: 1, at_collective: 1}")
        def test_rank_one_is_killed(rank, ctx):
            ctx.distributed.init_process_group("nccl")
            ctx.distributed.barrier()
    """, test_fixture="""
        def worker(rank, ctx):
            ctx.distributed.init_process_group("nccl")
            ctx.distributed.all_reduce(ctx.ones(rank + 1))

        def test_mismatch(coopsim_ctx):
            coopsim_ctx.multiprocessing.spawn(worker, (coopsim_ctx,), nprocs=2)

        def test_topology_option(coopsim_ctx):
            assert coopsim_ctx.sim.runtime.topology.name == "ring8"
    """, test_leak="""
        def stubborn(rank, ctx):
            try:
                ctx.wait(ctx.sim.event("never"))
            finally:
                while True:  # refuses to die: swallows every abort
                    try:
                        ctx.wait(ctx.sim.event("never either"))
                    except BaseException:
                        pass

        def test_leaks(coopsim_ctx):
            running = coopsim_ctx.multiprocessing.spawn(stubborn, (coopsim_ctx,), nprocs=1, join=False)
            assert running.join(timeout=0) is False  # one round: rank 0 is blocked in its wait
    """, test_bad="""
        import pytest

        @pytest.mark.coopsim(nprocs=2)
        def test_no_rank(ctx):
            pass
    """)
    result = installed.runpytest_subprocess(*FAST, "--coopsim-topology=ring8")
    result.assert_outcomes(failed=4, passed=2, errors=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["*coopsim: ScheduleFailure in test_rank_one_skips_the_barrier*",
                                 "*DeadlockError: deadlock at virtual time*",
                                 "*barrier #1 on group WORLD: arrived [[]0[]], missing [[]1[]]*",
                                 "*flight record (last 32 ops of each rank)*"])
    result.stdout.fnmatch_lines(["*coopsim: ScheduleFailure in test_rank_one_is_killed (*faults=*",
                                 "*missing [[]1[]]*", "faults injected (ctx.sim.faults):",
                                 "  kill rank 1 at its collective #1"])
    result.stdout.fnmatch_lines(["*coopsim: SpawnException in test_mismatch*",
                                 "*the ranks' calls do not match (different shapes)*"])
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaks*", "coopsim: the test left live "
                                 "greenlets behind (C4): rank 0 suspended at *test_leak.py:7 in stubborn"])
    assert "a @pytest.mark.coopsim test takes parameters 'rank' and 'ctx'; it lacks ['rank']" in out
