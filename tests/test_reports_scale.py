"""Reports that scale (issue 11, problem 6): rank sets as ranges, one mismatch table per
collective with ranks grouped by fingerprint, the call line of the collective, and 1,000-rank
reports under 20 KB."""

import inspect

import pytest

import coopsim
from coopsim.errors import format_ranks

N = 1000
GPU = {"memory_bytes": 80e9, "memory_bandwidth_GBps": 3000, "peak_flops": {"float32": 60e12},
       "launch_overhead_ns": 3000}
SWITCH = {"name": f"switch{N}", "device_kinds": {"gpu": GPU}, "devices": [{"kind": "gpu", "count": N}],
          "links": [{"pattern": "switch", "bandwidth_GBps": 50, "latency_ns": 700}]}


def line_of(fn, marker):
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if marker in line)


def run_big(worker, error):
    with coopsim.RuntimeContext(topology=SWITCH, ccl={"model": "analytic"}) as ctx:
        with pytest.raises(error) as info:
            ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=N)
    return info.value


@pytest.mark.parametrize("ranks, shown", [
    ([], "[]"), ([3], "[3]"), (range(999), "[0-998]"), ([0, 1, 2, 3, *range(5, 999)], "[0-3, 5-998]"),
    ([7, 1, 2, 1, 9], "[1-2, 7, 9]"),
])
def test_format_ranks_prints_sorted_ranges(ranks, shown):
    assert format_ranks(ranks) == shown


def test_c6_mismatch_at_1000_ranks_is_one_table_grouped_by_fingerprint_under_20_kb():
    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        dist.all_reduce(ctx.ones(4 if rank != N - 1 else 5))  # THE-CALL
        dist.barrier()  # the others fail here, at their next wait

    e = run_big(worker, coopsim.SpawnException)
    assert sorted(e.errors) == list(range(N))
    mismatch = str(e.errors[0])
    assert mismatch.count("shapes=[(4,)]") == 1 and mismatch.count("shapes=[(5,)]") == 1
    assert f"ranks [0-{N - 2}]: op=all_reduce" in mismatch and f"ranks [{N - 1}]: op=all_reduce" in mismatch
    call_line = line_of(worker, "THE-CALL")
    assert mismatch.count(f"called at {__file__}:{call_line} in worker") == 2
    assert f"-- Processes [1-{N - 2}] terminated with the same error" in e.msg
    assert len(e.msg.encode()) < 20_000


def test_c7_skipped_collective_at_1000_ranks_reports_ranges_under_20_kb():
    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        t = ctx.ones(4)
        if rank != N - 1:
            dist.all_reduce(t)
        t.tolist()  # READS-RESULT

    e = run_big(worker, coopsim.DeadlockError)
    text = str(e)
    assert f"all_reduce #1 on group WORLD: arrived [0-{N - 2}], missing [{N - 1}]" in text
    assert f"ranks [0-{N - 2}]" in text and f"rank {N - 1} is ended" in text
    assert len(text.encode()) < 20_000
    assert len(e.report["ranks"]) == N  # the structured report keeps every rank
