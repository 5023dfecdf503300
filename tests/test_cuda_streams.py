"""CUDA side streams (docs/adr/0017-cuda-streams.md): work issued under ``cuda.stream(s)`` goes
on ``s``; streams of one device run concurrently and share the device equally."""

import pytest

import coopsim


@pytest.fixture
def h100():
    with coopsim.RuntimeContext("dgx_h100") as ctx:
        yield ctx


def _gelu_work_ns(ctx, n):
    """Roofline time of gelu on n float32 elements, without the launch overhead."""
    dev = ctx.sim.runtime.devices[0]
    return dev.op_time_ns(2 * 4 * n, 8 * n, "float32") - dev.kind.launch_overhead_ns


def test_two_streams_of_one_device_share_it(h100):
    torch, F = h100, h100.nn.functional
    overhead = torch.sim.runtime.devices[0].kind.launch_overhead_ns
    big, small = torch.ones(1 << 20), torch.ones(1 << 19)
    torch.cuda.synchronize()
    t0 = torch.engine.now_ns
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    with torch.cuda.stream(s1):
        assert torch.cuda.current_stream() == s1 and torch.cuda.current_stream() != torch.cuda.default_stream()
        a = F.gelu(big)
    with torch.cuda.stream(s2):
        b = F.gelu(small)
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    w_big, w_small = _gelu_work_ns(torch, 1 << 20), _gelu_work_ns(torch, 1 << 19)
    assert w_big == pytest.approx(2 * w_small)
    b_done = b._storage.last_write
    torch.wait(b_done)
    assert b_done.time_ns - t0 == pytest.approx(overhead + 2 * w_small)  # half the device while both run
    torch.wait(a._storage.last_write)
    assert a._storage.last_write.time_ns - t0 == pytest.approx(overhead + w_small * 2 + (w_big - w_small))
    assert a.tolist()[:1] == pytest.approx([0.8413447]) and b.tolist()[:1] == pytest.approx([0.8413447])


def test_wait_stream_orders_streams_and_synchronize_covers_them(h100):
    torch, F = h100, h100.nn.functional
    overhead = torch.sim.runtime.devices[0].kind.launch_overhead_ns
    x = torch.ones(1 << 19)
    torch.cuda.synchronize()
    t0 = torch.engine.now_ns
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    with torch.cuda.stream(s1):
        y = F.gelu(x)
    s2.wait_stream(s1)
    with torch.cuda.stream(s2):
        z = y * 2  # reads y: ordered after it by wait_stream
    torch.cuda.synchronize()
    work = _gelu_work_ns(torch, 1 << 19)
    dev = torch.sim.runtime.devices[0]
    mul = dev.op_time_ns(2 * 4 * (1 << 19), 1 << 19, "float32")
    assert torch.engine.now_ns - t0 == pytest.approx(overhead + work + mul)
    assert z.tolist()[0] == pytest.approx(2 * 0.8413447)
    assert s1.query() and s2.query()


def test_event_wait_and_default_stream_joins_the_share(h100):
    torch, F = h100, h100.nn.functional
    x = torch.ones(1 << 19)
    side = torch.cuda.Stream()
    done = torch.cuda.Event()
    with torch.cuda.stream(side):
        y = F.gelu(x)
        done.record()  # on the current (side) stream
    done.wait(torch.cuda.current_stream())  # the default stream waits for it
    z = y + 1  # default stream, after the event
    assert z.tolist()[0] == pytest.approx(1.8413447)
    assert z._storage.last_write.time_ns >= y._storage.last_write.time_ns


def test_a_device_without_side_streams_keeps_the_fixed_roofline_path(h100):
    torch = h100
    x = torch.ones(1 << 20)
    op = (x * 2)._storage.last_write
    dev = torch.sim.runtime.devices[0]
    assert op.time_ns is None or op.time_ns > 0
    torch.cuda.synchronize()
    assert dev.stream.last is op  # the fixed-duration path: one op on the default stream
