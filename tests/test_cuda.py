"""The device cost model (roofline + launch overhead, stream order) and ``ctx.cuda``.

The default topology ``small`` has round numbers: memory bandwidth 1000 GB/s (1000 bytes/ns),
peak 10e12 FLOP/s float32 (1e4 FLOP/ns) and 100e12 float16, launch overhead 4000 ns.
"""

import pytest

from coopsim.engine import OutOfMemoryError
from tests.test_tensor import make_ctx

BW = 1000.0  # bytes per ns
OVERHEAD = 4000.0  # ns
PEAK = {"float32": 1e4, "float16": 1e5}  # FLOP per ns


@pytest.fixture
def ctx():
    with make_ctx() as c:
        yield c


def spawn(ctx, fn, nprocs, *args):
    return ctx.multiprocessing.spawn(fn, args=(ctx, *args), nprocs=nprocs)


def op_of(t):
    return t._storage.last_write


def test_the_small_topology_has_the_numbers_these_tests_assume(ctx):
    kind = ctx.sim.runtime.devices[0].kind
    assert (kind.memory_bandwidth_GBps, kind.launch_overhead_ns) == (BW, OVERHEAD)
    assert kind.peak_flops["float32"] / 1e9 == PEAK["float32"]
    assert kind.peak_flops["float16"] / 1e9 == PEAK["float16"]


# -- the cost model --------------------------------------------------------------------------

def test_a_copy_of_b_bytes_takes_read_plus_write_bytes_over_bandwidth_plus_overhead(ctx):
    n = 1 << 20
    src, dst = ctx.ones(n), ctx.empty(n)
    ctx.cuda.synchronize()
    start = ctx.engine.now_ns
    dst.copy_(src)
    ctx.cuda.synchronize()
    b = 4 * n  # bytes of the tensor; a copy reads B and writes B
    assert ctx.engine.now_ns - start == pytest.approx(OVERHEAD + 2 * b / BW, rel=1e-12)
    assert ctx.engine.now_ns - start == pytest.approx(4000 + 8388.608, rel=1e-12)


def test_creation_writes_its_bytes_and_empty_costs_nothing(ctx):
    t = ctx.zeros(1000)
    assert op_of(t).time_ns is None
    ctx.cuda.synchronize()
    assert ctx.engine.now_ns == OVERHEAD + 4000 / BW
    e = ctx.empty(1000)
    assert op_of(e) is None and ctx.cuda.current_stream().query()


def test_elementwise_counts_both_inputs_and_the_output(ctx):
    n = 1 << 20
    a, b = ctx.ones(n), ctx.ones(n)
    ctx.cuda.synchronize()
    start = ctx.engine.now_ns
    c = a + b
    s = a * 2.0  # a Python scalar reads no memory
    ctx.cuda.synchronize()
    assert op_of(c).time_ns - start == pytest.approx(OVERHEAD + 3 * 4 * n / BW, rel=1e-12)
    assert op_of(s).time_ns - op_of(c).time_ns == pytest.approx(OVERHEAD + 2 * 4 * n / BW, rel=1e-12)


def test_a_stream_runs_its_ops_in_order(ctx):
    a = ctx.ones(1 << 20)
    first = a * 2
    second = a[:1024] + 1
    first_ns = OVERHEAD + 2 * 4 * (1 << 20) / BW
    second_ns = OVERHEAD + 2 * 4 * 1024 / BW
    second.numpy()
    creation_end = op_of(a).time_ns
    assert op_of(first).time_ns == pytest.approx(creation_end + first_ns, rel=1e-12)
    assert op_of(second).time_ns == pytest.approx(op_of(first).time_ns + second_ns, rel=1e-12)


def test_streams_of_different_devices_run_in_parallel(ctx):
    a, b = ctx.ones(1 << 20, device=0), ctx.ones(1 << 20, device=1)
    (a * 2).sum().item()
    (b * 2).sum().item()
    assert op_of(a).time_ns == op_of(b).time_ns


@pytest.mark.parametrize("dtype_name", ["float32", "float16"])
def test_matmul_compute_bound_uses_the_peak_of_its_dtype(ctx, dtype_name):
    n = 512
    dt = getattr(ctx, dtype_name)
    a, b = ctx.ones(n, n, dtype=dt), ctx.ones(n, n, dtype=dt)
    ctx.cuda.synchronize()
    start = ctx.engine.now_ns
    c = a @ b
    ctx.cuda.synchronize()
    flops = 2 * n * n * n
    memory_ns = 3 * n * n * dt.itemsize / BW
    compute_ns = flops / PEAK[dtype_name]
    assert compute_ns > memory_ns
    assert op_of(c).time_ns - start == pytest.approx(OVERHEAD + compute_ns, rel=1e-12)


def test_matmul_memory_bound_case_uses_the_bandwidth(ctx):
    a, b = ctx.ones(4096, 1), ctx.ones(1, 4096)  # outer product: 2*4096*4096 flops, 64 MiB written
    ctx.cuda.synchronize()
    start = ctx.engine.now_ns
    c = a @ b
    ctx.cuda.synchronize()
    memory_ns = 4 * (4096 + 4096 + 4096 * 4096) / BW
    assert memory_ns > 2 * 4096 * 4096 / PEAK["float32"]
    assert op_of(c).time_ns - start == pytest.approx(OVERHEAD + memory_ns, rel=1e-12)


def test_reductions_count_input_and_output_bytes(ctx):
    t = ctx.ones(1000, 1000)
    ctx.cuda.synchronize()
    start = ctx.engine.now_ns
    s = t.sum(1)
    ctx.cuda.synchronize()
    assert op_of(s).time_ns - start == pytest.approx(OVERHEAD + 4 * (10**6 + 1000) / BW, rel=1e-12)


def test_host_calls_return_before_the_device_work_completes(ctx):
    t = ctx.ones(1 << 20)
    for _ in range(10):
        t = t * 1.5
    assert ctx.engine.now_ns == 0.0 and ctx.engine.steps == 0 and not op_of(t).done


# -- events ------------------------------------------------------------------------------------

def test_events_time_a_known_op_exactly_in_milliseconds(ctx):
    n = 1 << 20
    src, dst = ctx.ones(n), ctx.empty(n)
    start, end = ctx.cuda.Event(enable_timing=True), ctx.cuda.Event(enable_timing=True)
    start.record()
    dst.copy_(src)
    end.record()
    assert not end.query()
    end.synchronize()
    assert end.query()
    expected_ns = OVERHEAD + 2 * 4 * n / BW
    assert start.elapsed_time(end) == expected_ns / 1e6
    assert isinstance(ctx.cuda.Event(), ctx.cuda.Event)


def test_event_errors_as_torch(ctx):
    a, b = ctx.cuda.Event(enable_timing=True), ctx.cuda.Event(enable_timing=True)
    with pytest.raises(RuntimeError, match="Both events must be recorded"):
        a.elapsed_time(b)
    a.record()
    ctx.ones(10)
    b.record()
    with pytest.raises(RuntimeError, match="device not ready"):
        a.elapsed_time(b)
    ctx.cuda.synchronize()
    untimed = ctx.cuda.Event()
    untimed.record()
    untimed.synchronize()
    with pytest.raises(RuntimeError, match="enable_timing=True"):
        a.elapsed_time(untimed)
    never = ctx.cuda.Event()
    assert never.query()
    never.synchronize()  # returns at once, as CUDA


def test_event_wait_orders_another_devices_stream_after_the_event(ctx):
    slow = ctx.ones(1 << 20, device=0) * 2
    done0 = ctx.cuda.Event()
    done0.record(ctx.cuda.current_stream(0))
    done0.wait(ctx.cuda.current_stream(1))
    after = ctx.ones(4, device=1)  # queued on cuda:1 behind the wait
    after.numpy()
    assert op_of(after).time_ns == pytest.approx(op_of(slow).time_ns + OVERHEAD + 16 / BW, rel=1e-12)
    with pytest.raises(TypeError, match="stream must be None"):
        done0.record("cuda:0")


def test_events_in_ranks_time_their_own_device(ctx):
    elapsed = {}

    def worker(rank, ctx):
        start, end = ctx.cuda.Event(enable_timing=True), ctx.cuda.Event(enable_timing=True)
        x = ctx.ones(1000 * (rank + 1))
        start.record()
        y = x + x
        end.record()
        end.synchronize()
        elapsed[rank] = start.elapsed_time(end)
        assert y.device.index == rank

    spawn(ctx, worker, 2)
    assert elapsed == {r: (OVERHEAD + 3 * 4000 * (r + 1) / BW) / 1e6 for r in (0, 1)}


# -- devices, synchronize, memory ----------------------------------------------------------------

def test_device_queries(ctx):
    assert ctx.cuda.is_available() and ctx.cuda.device_count() == 4
    assert ctx.cuda.current_device() == 0
    assert ctx.accelerator is ctx.cuda
    assert ctx.cuda.OutOfMemoryError is OutOfMemoryError


def test_set_device_in_main_moves_new_tensors_and_validates(ctx):
    ctx.cuda.set_device(2)
    assert ctx.cuda.current_device() == 2 and str(ctx.ones(1).device) == "cuda:2"
    ctx.cuda.set_device("cuda:1")
    assert ctx.zeros(1).device.index == 1
    with pytest.raises(RuntimeError, match="device cuda:4 does not exist: topology 'small' has 4 devices"):
        ctx.cuda.set_device(4)
    with pytest.raises(RuntimeError, match="Device index must not be negative"):
        ctx.cuda.set_device(-1)
    with pytest.raises(TypeError, match="device must be"):
        ctx.cuda.set_device(1.0)
    assert ctx.cuda.current_device() == 1


def test_set_device_in_a_rank_is_that_ranks_own(ctx):
    seen = {}

    def worker(rank, ctx):
        seen[(rank, "start")] = ctx.cuda.current_device()
        if rank == 0:
            ctx.cuda.set_device(3)
        ctx.wait(ctx.sim.timer(1))
        seen[(rank, "end")] = (ctx.cuda.current_device(), ctx.ones(1).device.index)

    spawn(ctx, worker, 2)
    assert seen == {(0, "start"): 0, (1, "start"): 1, (0, "end"): (3, 3), (1, "end"): (1, 1)}
    assert ctx.cuda.current_device() == 0


def test_synchronize_waits_for_the_device_only(ctx):
    a = ctx.ones(1 << 20, device=0) * 2
    b = ctx.ones(1 << 22, device=1) * 2
    ctx.cuda.synchronize()
    assert op_of(a).done and not op_of(b).done and ctx.engine.now_ns == op_of(a).time_ns
    ctx.cuda.synchronize(1)
    assert op_of(b).done and ctx.engine.now_ns == op_of(b).time_ns
    ctx.cuda.synchronize()  # nothing queued: returns at once
    assert ctx.engine.now_ns == op_of(b).time_ns


def test_synchronize_in_a_rank_yields_to_the_others(ctx):
    log = []

    def worker(rank, ctx):
        if rank == 0:
            ctx.ones(1 << 20) * 2
            ctx.cuda.synchronize()
            log.append(("r0 synced", ctx.sim.now_ns()))
        else:
            log.append(("r1 ran", ctx.sim.now_ns()))

    spawn(ctx, worker, 2)
    assert log[0] == ("r1 ran", 0.0) and log[1][0] == "r0 synced" and log[1][1] > 0


def test_memory_allocated_and_out_of_memory(ctx):
    before = ctx.cuda.memory_allocated()
    t = ctx.zeros(256, 256)
    assert ctx.cuda.memory_allocated() - before == 4 * 256 * 256
    assert ctx.cuda.memory_allocated(1) == 0
    with pytest.raises(ctx.cuda.OutOfMemoryError, match="GPU 0 has a total capacity"):
        ctx.zeros(1 << 33)
    del t


def test_current_stream_records_waits_and_synchronizes(ctx):
    s = ctx.cuda.current_stream()
    assert s == ctx.cuda.default_stream(0) and s.device == ctx.device("cuda:0") and s.query()
    t = ctx.ones(1 << 20) * 2
    ev = s.record_event()
    assert not s.query() and not ev.query()
    other = ctx.cuda.current_stream(1)
    other.wait_event(ev)
    later = ctx.ones(1, device=1)
    s.synchronize()
    assert ev.query() and op_of(t).done and ctx.engine.now_ns == op_of(t).time_ns
    later.item()
    assert op_of(later).time_ns == pytest.approx(op_of(t).time_ns + OVERHEAD + 4 / BW, rel=1e-12)
