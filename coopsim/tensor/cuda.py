"""``ctx.cuda`` (and ``ctx.accelerator``): torch.cuda's device management, streams and events.

Each simulated device has one stream (its ``SimDevice.stream``), which is both the default
and the current stream. Times are virtual; ``Event.elapsed_time`` is in milliseconds, as in
PyTorch, and is exact: ``(end - start) / 1e6`` of the events' completion times in ns.
"""

from __future__ import annotations

from coopsim.engine import OutOfMemoryError
from coopsim.tensor.memory import MemoryStats
from coopsim.tensor.random import generator_for, manual_seed_all
from coopsim.tensor.tensor import Device, device_index


class Stream:
    """The stream of one device, as ``torch.cuda.current_stream()`` returns it.

    Every device op of coopsim runs on this stream; there is one per device.
    """

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
            return Stream(self._cuda, self._cuda._rt.current_device().index)
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
        """Wait (host) until all work queued on ``device`` (default: the current) is done."""
        Stream(self, device_index(self._rt, device, "synchronize")).synchronize()

    def current_stream(self, device=None) -> Stream:
        return Stream(self, device_index(self._rt, device, "current_stream"))

    default_stream = current_stream

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
