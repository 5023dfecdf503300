"""``ctx.cuda`` (and ``ctx.accelerator``): torch.cuda's device management, streams and events.

Each simulated device has its default stream (its ``SimDevice.stream``); ``Stream()`` adds
side streams whose ops run concurrently and share the device (docs/adr/0017-cuda-streams.md),
and ``stream(s)`` makes one the caller's current stream. Times are virtual; ``Event.elapsed_time`` is in milliseconds, as in
PyTorch, and is exact: ``(end - start) / 1e6`` of the events' completion times in ns.
"""

from __future__ import annotations

from coopsim.engine import OutOfMemoryError
from coopsim.tensor.memory import MemoryStats
from coopsim.tensor.random import generator_for, manual_seed_all
from coopsim.tensor.state import process_state
from coopsim.tensor.streams import new_stream
from coopsim.tensor.tensor import Device, device_index


class Stream:
    """The default stream of one device, as ``torch.cuda.default_stream()`` returns it
    (``SideStream`` below is a stream made by ``torch.cuda.Stream()``)."""

    def __init__(self, cuda, index: int):
        self._cuda = cuda  # the Cuda namespace this stream belongs to
        self.device_index = index
        self._stream = cuda._rt.devices[index].stream

    @property
    def device(self) -> Device:
        return Device("cuda", self.device_index)

    def synchronize(self) -> None:
        """Wait (host) until all work queued on the stream is complete."""
        last = self._stream.last
        if last is not None:
            self._cuda._rt.wait(last)

    def query(self) -> bool:
        """True if all work queued on the stream is complete."""
        last = self._stream.last
        return last is None or last.done

    def record_event(self, event=None):
        event = event if event is not None else self._cuda.Event()
        event.record(self)
        return event

    def wait_event(self, event) -> None:
        """Work queued on this stream from now on starts after ``event`` completes."""
        event.wait(self)

    def wait_stream(self, stream) -> None:
        """Work queued on this stream from now on starts after the work queued on
        ``stream`` so far (``torch.cuda.Stream.wait_stream``)."""
        self.wait_event(stream.record_event())

    def __eq__(self, other) -> bool:
        return isinstance(other, Stream) and other._stream is self._stream

    def __hash__(self) -> int:
        return hash(self.device_index)

    def __repr__(self) -> str:
        return f"<coopsim Stream of cuda:{self.device_index}>"


class Event:
    """``torch.cuda.Event``: a marker enqueued on a stream by ``record``.

    A recorded event completes when all the work queued on its stream before it has
    completed; that completion's virtual time is its timestamp. Recording costs no time.
    ``Cuda`` gives each context a subclass bound to its namespace (``ctx.cuda.Event``), so
    that ``ctx.cuda.Event(enable_timing=True)`` works as in torch.
    """

    _cuda = None  # the Cuda namespace, set on each context's subclass

    def __init__(self, enable_timing: bool = False, blocking: bool = False,
                 interprocess: bool = False):
        self.enable_timing = enable_timing
        self.blocking = blocking
        self.interprocess = interprocess
        self._handle = None  # the marker op of the last record(), None until recorded

    def _stream(self, stream, what: str):
        if stream is None:
            return self._cuda.current_stream()
        if not isinstance(stream, Stream):
            raise TypeError(f"Event.{what}: stream must be None or ctx.cuda.current_stream(...), "
                            f"got {stream!r}")
        return stream

    def record(self, stream=None) -> None:
        """Enqueue the marker on ``stream`` (default: the caller's current device's)."""
        s = self._stream(stream, "record")
        self._handle = s._stream.enqueue(0.0, ("event recorded on cuda:{}", s.device_index))

    def wait(self, stream=None) -> None:
        """Make work queued on ``stream`` from now on wait for this event (no host wait)."""
        s = self._stream(stream, "wait")
        if self._handle is not None:
            s._stream.enqueue(0.0, ("wait for event on cuda:{}", s.device_index), deps=(self._handle,))

    def query(self) -> bool:
        """True if the event has completed, or was never recorded (as CUDA)."""
        return self._handle is None or self._handle.done

    def synchronize(self) -> None:
        """Wait (host) until the event has completed; returns at once if never recorded."""
        if self._handle is not None:
            self._cuda._rt.wait(self._handle)

    def elapsed_time(self, end_event: "Event") -> float:
        """Milliseconds of virtual time from this event to ``end_event``; both must have
        timing enabled, be recorded and be complete (synchronize first), as in torch."""
        if self._handle is None or end_event._handle is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        if not (self.enable_timing and end_event.enable_timing):
            raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
        if not (self._handle.done and end_event._handle.done):
            raise RuntimeError("CUDA error: device not ready (an event has not completed yet: "
                               "call end_event.synchronize() or ctx.cuda.synchronize() first)")
        return (end_event._handle.time_ns - self._handle.time_ns) / 1e6

    def __repr__(self) -> str:
        state = "not recorded" if self._handle is None else ("complete" if self._handle.done else "pending")
        return f"<coopsim cuda.Event {state}>"


class Cuda:
    """The ``torch.cuda``-shaped namespace of a ``RuntimeContext``.

    The caller's current device is its rank's task's ``device`` (rank r starts on device r),
    or main's current device in main (0 to start with).
    """

    OutOfMemoryError = OutOfMemoryError

    def __init__(self, rt):
        self._rt = rt  # the runtime port
        self.Event = type("Event", (Event,), {"_cuda": self, "__module__": __name__})

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return len(self._rt.devices)

    def current_device(self) -> int:
        return self._rt.current_device().index

    def set_device(self, device) -> None:
        """Make ``device`` (an int, "cuda:i" or ctx.device) the caller's current device."""
        self._rt.set_current_device(device_index(self._rt, device, "set_device"))

    def synchronize(self, device=None) -> None:
        """Wait (host) until all work queued on ``device`` (default: the current), on all its
        streams, is done."""
        index = device_index(self._rt, device, "synchronize")
        for stream in self._rt.devices[index].all_streams():  # also NCCL's and p2p's (named)
            last = stream.last
            if last is not None:
                self._rt.wait(last)

    def current_stream(self, device=None) -> Stream:
        """The caller's current stream of ``device``: the one a ``stream(s)`` block set, else
        the default stream."""
        index = device_index(self._rt, device, "current_stream")
        side = process_state(self._rt).streams.get(index)
        return Stream(self, index) if side is None else SideStream(self, index, side)

    def default_stream(self, device=None) -> Stream:
        return Stream(self, device_index(self._rt, device, "default_stream"))

    def memory_allocated(self, device=None) -> int:
        """Bytes held by live tensors' storages on ``device`` (default: the current)."""
        return self._rt.devices[device_index(self._rt, device, "memory_allocated")].allocated_bytes

    # -- the torch surface (docs/adr/0016-torch-surface.md) ---------------------------------

    def _index(self, device, what: str) -> int:
        return device_index(self._rt, device, what)

    def max_memory_allocated(self, device=None) -> int:
        return MemoryStats(self._rt, self._index).max_memory_allocated(device)

    def reset_peak_memory_stats(self, device=None) -> None:
        MemoryStats(self._rt, self._index).reset_peak_memory_stats(device)

    def memory_reserved(self, device=None) -> int:
        return MemoryStats(self._rt, self._index).memory_reserved(device)

    def max_memory_reserved(self, device=None) -> int:
        return MemoryStats(self._rt, self._index).max_memory_reserved(device)

    def empty_cache(self) -> None:
        """Nothing is cached (no caching allocator is modelled)."""

    def mem_get_info(self, device=None) -> tuple:
        return MemoryStats(self._rt, self._index).mem_get_info(device)

    def get_device_name(self, device=None) -> str:
        """The device kind's name in the topology (e.g. ``a100_sxm4_80gb``)."""
        return self._rt.devices[self._index(device, "get_device_name")].kind.name

    def get_device_properties(self, device=None) -> "DeviceProperties":
        return DeviceProperties(self._rt.devices[self._index(device, "get_device_properties")])

    def manual_seed(self, seed) -> None:
        """Seeds the caller's generator of its current device."""
        generator_for(self._rt, self._rt.current_device().index).manual_seed(seed)

    def manual_seed_all(self, seed) -> None:
        manual_seed_all(self._rt, seed, cpu=False, cuda=True)

    def initial_seed(self) -> int:
        return generator_for(self._rt, self._rt.current_device().index).initial_seed()

    def Stream(self, device=None, priority: int = 0) -> "SideStream":
        """``torch.cuda.Stream``: a new stream on ``device`` (default: the current)."""
        index = device_index(self._rt, device, "Stream")
        return SideStream(self, index, new_stream(self._rt, index), priority)

    def stream(self, stream) -> "StreamContext":
        return StreamContext(self._rt, stream)

    def set_stream(self, stream) -> None:
        _set_current(process_state(self._rt).streams, stream.device_index, stream)


class SideStream(Stream):
    """A stream made by ``torch.cuda.Stream()``: its own in-order queue on the device, whose
    ops run concurrently with the other streams' and share the device
    (docs/adr/0017-cuda-streams.md). ``priority`` is recorded, not modelled."""

    def __init__(self, cuda, index: int, engine_stream, priority: int = 0):
        self._cuda = cuda
        self.device_index = index
        self._stream = engine_stream
        self.priority = priority

    def __hash__(self) -> int:
        return hash((self.device_index, self._stream.name))

    def __repr__(self) -> str:
        return f"<coopsim Stream {self._stream.name} of cuda:{self.device_index}>"


class StreamContext:
    """``torch.cuda.stream(s)``: ``s`` is the caller's current stream of its device inside
    the block; ``None`` changes nothing."""

    def __init__(self, rt, stream):
        if stream is not None and not isinstance(stream, Stream):
            raise TypeError(f"torch.cuda.stream: expected a ctx.cuda.Stream or None, got {stream!r}")
        self._rt = rt
        self._stream = stream
        self._saved = []

    def __enter__(self):
        if self._stream is not None:
            streams = process_state(self._rt).streams
            index = self._stream.device_index
            self._saved.append(streams.get(index))
            _set_current(streams, index, self._stream)
        return self._stream

    def __exit__(self, *exc):
        if self._stream is not None:
            streams = process_state(self._rt).streams
            previous = self._saved.pop()
            if previous is None:
                streams.pop(self._stream.device_index, None)
            else:
                streams[self._stream.device_index] = previous
        return False


def _set_current(streams: dict, index: int, stream) -> None:
    if isinstance(stream, SideStream):
        streams[index] = stream._stream
    else:
        streams.pop(index, None)  # the default stream


class DeviceProperties:
    """``torch.cuda.get_device_properties``: what the topology says about a device (name,
    total_memory, and the kind's roofline numbers). Fields the topology does not give
    (``multi_processor_count``, ``major``/``minor`` ...) raise AttributeError saying so."""

    def __init__(self, device):
        kind = device.kind
        self.name = kind.name
        self.total_memory = kind.memory_bytes
        self.memory_bandwidth_GBps = kind.memory_bandwidth_GBps
        self.peak_flops = dict(kind.peak_flops)

    def __getattr__(self, name):
        raise AttributeError(f"coopsim has no torch.cuda.get_device_properties().{name}: the "
                             f"topology YAML does not describe it (see docs/torch-surface.md)")

    def __repr__(self) -> str:
        return f"_CudaDeviceProperties(name='{self.name}', total_memory={self.total_memory // 2**20}MB)"
