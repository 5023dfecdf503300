"""The flight recorder (coopsim.testing.flightrecorder): records, reports, JSON dump."""

import datetime
import json

import pytest

from coopsim.errors import DeadlockError, SpawnException

PYTORCH_FIELDS = {"record_id", "pg_id", "process_group", "collective_seq_id", "p2p_seq_id", "op_id",
                  "profiling_name", "time_created_ns", "input_sizes", "input_dtypes", "output_sizes",
                  "output_dtypes", "state", "time_discovered_started_ns",
                  "time_discovered_completed_ns", "duration_ms", "retired", "timeout_ms", "is_p2p",
                  "frames"}


def rank_two_skips_the_second_all_reduce(rank, ctx):
    dist = ctx.distributed
    dist.init_process_group("nccl")
    t = ctx.ones(4)
    dist.all_reduce(t)
    if rank != 2:
        dist.all_reduce(t)  # LINE: the waiting ranks' pending op
    else:
        dist.recv(ctx.zeros(4), src=0)  # LINE: the missing rank's pending op
    t.sum().item()


def test_c7_the_record_of_a_hung_collective_names_the_missing_and_the_waiting_ops(ctx, tmp_path):
    with pytest.raises(DeadlockError) as caught:
        ctx.multiprocessing.spawn(rank_two_skips_the_second_all_reduce, (ctx,), nprocs=3)
    record = caught.value.flight_record
    assert sorted(record) == [0, 1, 2]
    missing = record[2]
    assert [(r["profiling_name"], r["state"]) for r in missing] == [
        ("nccl:all_reduce", "completed"), ("nccl:recv", "started")]
    assert missing[0]["collective_seq_id"] == 1
    for rank in (0, 1):
        last = record[rank][-1]
        assert (last["profiling_name"], last["collective_seq_id"], last["state"]) == ("nccl:all_reduce", 2, "started")
        assert last["where"].endswith("in rank_two_skips_the_second_all_reduce")
        assert record[rank][0]["state"] == "completed"
    report = str(caught.value)
    assert "flight record (last 32 ops of each rank)" in report
    row = next(line for line in report.splitlines() if line.strip().startswith("[2] "))
    assert "all_reduce #1 on WORLD" in row and "recv(peer=0) started" in row

    path = tmp_path / "fr.json"
    ctx.sim.dump_flight_record(path)
    dump = json.loads(path.read_text())
    assert dump["pg_config"] == {"0": {"name": "0", "desc": "WORLD"}}
    assert len(dump["entries"]) == 6
    for entry in dump["entries"]:
        assert PYTORCH_FIELDS <= set(entry)
    first = dump["ranks"]["0"][0]
    assert first["input_sizes"] == [[4]] and first["input_dtypes"] == ["Float"]
    assert first["retired"] is True and first["time_discovered_completed_ns"] > first["time_created_ns"]
    assert first["frames"][0]["name"] == "rank_two_skips_the_second_all_reduce"


def test_each_rank_keeps_only_its_last_32_ops(ctx):
    def many(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        t = ctx.ones(2)
        for _ in range(40):
            dist.all_reduce(t)
        t.sum().item()

    ctx.multiprocessing.spawn(many, (ctx,), nprocs=2)
    record = ctx.sim.flight_recorder.entries()
    assert [len(record[r]) for r in (0, 1)] == [32, 32]
    assert [r["collective_seq_id"] for r in record[1]] == list(range(9, 41))
    assert all(r["state"] == "completed" for r in record[0])


def test_op_and_p2p_numbers_run_on_across_the_rings_trims(ctx):
    """The ring keeps one tuple per op and drops its older half in bulk: the op_id, record_id
    and p2p_seq_id of what is kept still count every op the rank issued, for any length."""
    def mixed(rank, ctx, n):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        t = ctx.ones(2)
        for i in range(n):
            if i % 3 == 2:  # every third op a p2p op
                (dist.isend if rank == 0 else dist.irecv)(t, 1 - rank).wait()
            else:
                dist.all_reduce(t)
        t.sum().item()

    for n in (31, 32, 63, 64, 65, 100):
        ctx.multiprocessing.spawn(mixed, (ctx, n), nprocs=2)
        kinds = ["p2p" if i % 3 == 2 else "coll" for i in range(n)]
        p2p_seq = [kinds[:i + 1].count("p2p") if k == "p2p" else 0 for i, k in enumerate(kinds)]
        coll_seq = [kinds[:i + 1].count("coll") if k == "coll" else 0 for i, k in enumerate(kinds)]
        first = max(0, n - 32)
        for rank, records in ctx.sim.flight_recorder.entries().items():
            assert [r["op_id"] for r in records] == list(range(first + 1, n + 1)), (n, rank)
            assert [r["record_id"] for r in records] == list(range(first, n))
            assert [r["p2p_seq_id"] for r in records] == p2p_seq[first:]
            assert [r["collective_seq_id"] for r in records] == coll_seq[first:]
            assert [r["is_p2p"] for r in records] == [k == "p2p" for k in kinds[first:]]


def test_a_new_spawn_starts_a_new_record(ctx):
    def one(rank, ctx, n):
        ctx.distributed.init_process_group("nccl")
        for _ in range(n):
            ctx.distributed.barrier()

    ctx.multiprocessing.spawn(one, (ctx, 3), nprocs=2)
    ctx.multiprocessing.spawn(one, (ctx, 1), nprocs=2)
    assert [r["collective_seq_id"] for r in ctx.sim.flight_recorder.entries()[0]] == [1]


def test_a_timeout_report_carries_the_record_and_its_table(ctx):
    def late(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl", timeout=datetime.timedelta(seconds=1))
        t = ctx.ones(4)
        if rank == 0:
            ctx.wait(ctx.sim.timer(5e9))  # 5 s of virtual time: past the 1 s timeout
        dist.all_reduce(t)
        t.sum().item()

    with pytest.raises(SpawnException) as caught:
        ctx.multiprocessing.spawn(late, (ctx,), nprocs=2)
    error = caught.value
    assert error.flight_record[1][-1]["state"] == "started"
    assert error.errors[1].flight_record == error.flight_record
    assert "flight record (last 32 ops of each rank)" in str(error)
    assert "all_reduce #1 on WORLD started" in str(error)

