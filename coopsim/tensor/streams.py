"""Side CUDA streams of the tensor layer (docs/adr/0017-cuda-streams.md).

A device starts with its one default stream, on which every op takes its fixed roofline
time (ADR 0005). Once a side stream is created on a device (``torch.cuda.Stream``), the
tensor ops issued on that device (on any of its streams) run through the device's
``SharedDevice``: the launch overhead on the issuing stream, then the roofline work sharing
the device with the ops of its other streams. Which stream an op goes on is the caller's
current stream of that device (``ProcessState.streams``, set by ``torch.cuda.stream(s)``).
"""

from __future__ import annotations

from coopsim.engine import Stream as EngineStream
from coopsim.engine.sharing import SharedDevice
from coopsim.tensor.state import process_state

_KEY = "tensor.shared_devices"


class DeviceStreams:
    """A device's sharing state and its side streams (in creation order)."""

    __slots__ = ("share", "streams")

    def __init__(self, engine, index: int):
        self.share = SharedDevice(engine, f"dev{index}")
        self.streams: list = []


def table(rt) -> dict:
    """Device index -> ``DeviceStreams``, for the devices that have side streams."""
    return rt.context_state(_KEY, dict)


def new_stream(rt, index: int) -> EngineStream:
    """A new side stream on device ``index``; from now on the device's ops share it."""
    entry = table(rt).get(index)
    if entry is None:
        entry = table(rt)[index] = DeviceStreams(rt.engine, index)
    stream = rt.devices[index].named_stream(f"s{len(entry.streams) + 1}", side=True)
    entry.streams.append(stream)
    return stream


def current_stream(rt, device) -> EngineStream:
    """The caller's current stream of ``device`` (``torch.cuda.current_stream``): the side
    stream a ``torch.cuda.stream(s)`` block set, else the device's default stream."""
    if not device.side_streams:  # no side stream on the device: the common case
        return device.stream
    return process_state(rt).streams.get(device.index) or device.stream


def route(rt, device, desc, nbytes, flops, cost_dtype: str, fn):
    """Enqueue a tensor op on the caller's current stream of ``device`` through the device's
    share; only for a device with side streams (``device.side_streams``: then it has a share)."""
    entry = table(rt)[device.index]
    stream = current_stream(rt, device)
    overhead = device.kind.launch_overhead_ns
    work_ns = device.op_time_ns(nbytes, flops, cost_dtype) - overhead
    share = entry.share

    def start():
        work = share.run(work_ns, desc)
        if fn is not None:
            work.callbacks = [lambda _work: fn()]
        return work

    return stream.enqueue_work(desc, start, delay_ns=overhead)
