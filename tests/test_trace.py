"""ctx.sim.trace and --trace: Chrome trace-event JSON of device streams and link transfers."""

import json
from collections import defaultdict

import pytest

import coopsim
from coopsim.bench import cli as bench_cli

EPS_US = 1e-9  # ts + dur of one slice vs ts of the next: float round-off only


def _all_reduce_worker(rank, ctx, times, numel):
    dist = ctx.distributed
    dist.init_process_group("nccl")
    t = ctx.ones(numel)
    start, end = ctx.cuda.Event(enable_timing=True), ctx.cuda.Event(enable_timing=True)
    start.record()
    dist.all_reduce(t)
    end.record()
    end.synchronize()
    times[rank] = (start._handle.time_ns, end._handle.time_ns)


def _all_to_all_worker(rank, ctx):
    dist = ctx.distributed
    dist.init_process_group("nccl")
    n = dist.get_world_size()
    out = ctx.zeros(n * 1024)
    dist.all_to_all_single(out, ctx.ones(n * 1024) * rank)
    assert out.numpy()[-1] == n - 1


def traced(tmp_path, topology, worker, *args, name="t.json"):
    path = tmp_path / name
    with coopsim.RuntimeContext(topology) as ctx:
        with ctx.sim.trace(path):
            ctx.multiprocessing.spawn(worker, args=(ctx, *args), nprocs=ctx.topology.num_devices)
    return json.loads(path.read_text()), path


def check_format(doc) -> None:
    """The trace-event format: metadata naming every process and thread used, complete events
    with ts/dur in us, instant events; slices on one track never overlap."""
    events = doc["traceEvents"]
    assert isinstance(events, list) and events
    named = {(e["pid"], e.get("tid")) for e in events if e["ph"] == "M"
             and e["name"] in ("process_name", "thread_name")}
    tracks = defaultdict(list)
    for e in events:
        assert e["ph"] in ("M", "X", "i"), e
        if e["ph"] == "M":
            assert isinstance(e["args"]["name" if e["name"].endswith("_name") else "sort_index"],
                              (str, int))
            continue
        assert isinstance(e["name"], str) and isinstance(e["args"], dict)
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        assert (e["pid"], None) in named and (e["pid"], e["tid"]) in named
        assert e["ts"] >= 0
        if e["ph"] == "X":
            assert e["dur"] > 0
            tracks[e["pid"], e["tid"]].append((e["ts"], e["ts"] + e["dur"]))
    for slices in tracks.values():
        slices.sort()
        for (_, end), (start, _) in zip(slices, slices[1:]):
            assert start >= end - EPS_US, "slices overlap on one track"


def test_trace_is_chrome_trace_json_with_a_process_per_device(tmp_path):
    doc, _ = traced(tmp_path, "dgx_h100", _all_reduce_worker, {}, 1 << 16)
    check_format(doc)
    events = doc["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert processes == {i: f"cuda:{i} (dev{i}, h100_sxm5_80gb)" for i in range(8)}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert threads[0, 0] == "stream"
    assert threads[0, 1] == "stream nccl WORLD"  # the group's communicator stream (ProcessGroupNCCL)
    assert {threads[0, 2], threads[0, 3]} == {"link dev0->sw0", "link sw0->dev0"}


def _side_stream_worker(rank, ctx):
    ctx.distributed.init_process_group("nccl")
    s = ctx.cuda.Stream()
    x = ctx.ones(1 << 16)
    s.wait_stream(ctx.cuda.current_stream())
    with ctx.cuda.stream(s):
        y = x * 2
        ctx.distributed.all_reduce(y)
    y.sum().item()


def test_every_stream_of_a_device_has_its_track(tmp_path):
    """Side streams and the group's NCCL stream are traced on tracks of their own, named after
    them, beside the default stream; the side stream's op and the collective land on theirs."""
    doc, _ = traced(tmp_path, "ring8", _side_stream_worker)
    check_format(doc)
    events = doc["traceEvents"]
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["name"] == "thread_name"}
    slices = {(e["pid"], threads[e["pid"], e["tid"]], e["name"].split(" ")[0]) for e in events
              if e["ph"] == "X"}
    for dev in range(8):
        assert (dev, "stream s1", "mul") in slices
        assert (dev, "stream nccl WORLD", "all_reduce") in slices
        assert (dev, "stream", "sum") in slices


def test_slices_carry_bytes_algorithm_step_and_sequence_number(tmp_path):
    doc, _ = traced(tmp_path, "ring8", _all_reduce_worker, {}, 1 << 16)
    slices = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    links = [e for e in slices if e["cat"] == "link"]
    streams = [e for e in slices if e["cat"] == "stream" and "collective" in e["args"]]
    assert len(streams) == 8 and len(links) == 8 * 2 * 7  # ring: 2(p-1) steps of p transfers
    for e in streams:
        assert e["args"] | {"collective": "all_reduce", "algorithm": "ring", "bytes": 1 << 18,
                            "model": "transfer", "group": "WORLD"} == e["args"]
    seq = streams[0]["args"]["seq"]
    assert {e["args"]["seq"] for e in links} == {seq}
    assert sorted({e["args"]["step"] for e in links}) == list(range(14))
    for e in links:
        assert e["args"]["bytes"] == (1 << 18) // 8 and e["args"]["collective_bytes"] == 1 << 18
        assert e["args"]["algorithm"] == "ring"
        assert e["args"]["dst_rank"] == (e["args"]["src_rank"] + 1) % 8
        assert e["name"].startswith(f"all_reduce #{seq} step {e['args']['step']}: ")


def test_concurrent_transfers_on_one_link_get_lanes(tmp_path):
    doc, _ = traced(tmp_path, "ring8", _all_to_all_worker)  # multi-hop routes share links
    check_format(doc)
    names = [e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"]
    assert any(n.endswith(" #2") for n in names)


def test_stream_slice_of_a_collective_spans_its_events(tmp_path):
    times = {}
    doc, _ = traced(tmp_path, "dgx_h100", _all_reduce_worker, times, 1 << 20)
    slices = {e["pid"]: e for e in doc["traceEvents"]
              if e["ph"] == "X" and e["cat"] == "stream" and "seq" in e["args"]}
    for rank, (start_ns, end_ns) in times.items():
        e = slices[rank]  # the op the rank's two cuda events enclose
        assert e["ts"] == pytest.approx(start_ns / 1e3, abs=EPS_US)
        assert e["ts"] + e["dur"] == pytest.approx(end_ns / 1e3, abs=EPS_US)


def test_trace_span_equals_the_bench_reported_time(tmp_path):
    trace, table = tmp_path / "t.json", tmp_path / "r.json"
    code = bench_cli.main(["-b", "1M", "-e", "1M", "-n", "1", "-w", "0", "-c", "0", "--trace", str(trace),
                          "--json", str(table)])
    assert code == 0
    doc = json.loads(trace.read_text())
    check_format(doc)
    # only the timed collectives are traced, one window each, one after the other in time
    windows = []
    for e in sorted((e for e in doc["traceEvents"] if e["ph"] == "X"), key=lambda e: e["ts"]):
        if not windows or e["ts"] > windows[-1][1]:
            windows.append([e["ts"], e["ts"] + e["dur"], set()])
        windows[-1][1] = max(windows[-1][1], e["ts"] + e["dur"])
        windows[-1][2].add(e["args"]["seq"])
    row = json.loads(table.read_text())["rows"][0]
    assert len(windows) == 2 and all(len(seqs) == 1 for *_, seqs in windows)
    for (first, last, _), place in zip(windows, ("out_of_place", "in_place")):
        assert last - first == pytest.approx(row[f"{place}_time_us"], rel=1e-12)


def test_recording_starts_and_stops_with_the_block(tmp_path):
    path = tmp_path / "t.json"
    with coopsim.RuntimeContext("small") as ctx:
        (ctx.ones(4) + 1).numpy()  # before: not recorded
        with ctx.sim.trace(path) as recorder:
            assert ctx.network.trace is recorder
            assert all(d.stream.trace is recorder for d in ctx.sim.runtime.devices)
            (ctx.ones(8) * 2).numpy()
        assert ctx.network.trace is None and all(d.stream.trace is None for d in ctx.sim.runtime.devices)
        (ctx.ones(16) + 3).numpy()  # after: not recorded
    names = [e["name"] for e in json.loads(path.read_text())["traceEvents"] if e["ph"] == "X"]
    assert names and all("(8,)" in n for n in names)


def test_a_second_trace_on_one_context_is_refused_and_a_failing_block_is_still_written(tmp_path):
    with coopsim.RuntimeContext("small") as ctx:
        with pytest.raises(ValueError, match="boom"):
            with ctx.sim.trace(tmp_path / "a.json"):
                ctx.ones(2).numpy()
                with pytest.raises(RuntimeError, match="already recording"):
                    with ctx.sim.trace(tmp_path / "b.json"):
                        pass
                raise ValueError("boom")
    assert json.loads((tmp_path / "a.json").read_text())["traceEvents"]
    assert not (tmp_path / "b.json").exists()


def test_c9_trace_is_deterministic(tmp_path):
    files = [traced(tmp_path, "cluster_2x8", _all_reduce_worker, {}, 1 << 12, name=f"{k}.json")[1]
             for k in range(2)]
    assert files[0].read_bytes() == files[1].read_bytes()
