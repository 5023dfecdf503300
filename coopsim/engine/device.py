"""A simulated accelerator: its stream, its memory, and the roofline cost of an op."""

from __future__ import annotations

from coopsim.engine.core import Engine, Handle
from coopsim.engine.stream import Stream


class OutOfMemoryError(RuntimeError):
    """An allocation exceeded the device's memory (as ``torch.cuda.OutOfMemoryError``)."""


class SimDevice:
    """The runtime state of one topology ``Device``.

    Cost model (docs/adr/0005-device-cost-model.md): an op that moves ``nbytes`` through
    device memory and performs ``flops`` operations of ``dtype`` takes
    ``launch_overhead_ns + max(nbytes / memory_bandwidth, flops / peak_flops[dtype])``.
    Bandwidth in GB/s is bytes per ns; peak in FLOP/s is ``peak / 1e9`` FLOP per ns.
    """

    __slots__ = ("spec", "index", "kind", "stream", "streams", "side_streams", "allocated_bytes",
                 "peak_bytes", "_topology_name", "slowdown")

    def __init__(self, engine: Engine, spec, topology_name: str = ""):
        self.spec = spec  # coopsim.topology.Device
        self.index = spec.index
        self.kind = spec.kind
        self.stream = Stream(engine, f"dev{spec.index}")  # the default stream
        # the device's other streams by name, in creation order: side streams, NCCL
        # communicator and p2p pair streams (``named_stream``); traced and synchronized with it
        self.streams: dict[str, Stream] = {}
        self.side_streams = 0  # how many of them are side streams (``torch.cuda.Stream``)
        self.allocated_bytes = 0
        self.peak_bytes = 0  # the most allocated at once since the start or the last reset
        self._topology_name = topology_name
        self.slowdown = 1.0  # op time multiplier: a slow device (fault injection, coopsim.testing)

    def named_stream(self, name: str, side: bool = False) -> Stream:
        """The device's stream called ``name`` (made on first use): it runs concurrently with
        the others, and a trace attached to the device records it too. ``side``: a stream the
        user made (``torch.cuda.Stream``), which can become a rank's current stream."""
        stream = self.streams.get(name)
        if stream is None:
            stream = self.streams[name] = Stream(self.stream.engine, f"dev{self.index} {name}")
            stream.trace = self.stream.trace
            self.side_streams += side
        return stream

    def all_streams(self) -> list[Stream]:
        """The default stream, then the named ones in creation order."""
        return [self.stream, *self.streams.values()]

    def op_time_ns(self, nbytes: float, flops: float = 0.0, dtype: str = "float32") -> float:
        memory_ns = self.memory_ns(nbytes)
        compute_ns = self.compute_ns(flops, dtype) if flops else 0.0
        return self.kind.launch_overhead_ns + (memory_ns if memory_ns > compute_ns else compute_ns)

    def memory_ns(self, nbytes: float) -> float:
        """Time to move ``nbytes`` through device memory (GB/s is bytes per ns)."""
        return nbytes / self.kind.memory_bandwidth_GBps

    def compute_ns(self, flops: float, dtype: str) -> float:
        """Time to perform ``flops`` operations of ``dtype`` at the kind's peak."""
        peak = self.kind.peak_flops.get(dtype)
        if not peak:
            raise ValueError(
                f"device kind {self.kind.name!r} of topology {self._topology_name!r} has no "
                f"peak_flops for {dtype}; add device_kinds.{self.kind.name}.peak_flops.{dtype}"
            )
        return flops * 1e9 / peak

    def launch(self, desc, nbytes: float, flops: float = 0.0, dtype: str = "float32",
               fn=None, deps=()) -> Handle:
        """Enqueue an op on this device's stream with its roofline cost."""
        return self.stream.enqueue(self.op_time_ns(nbytes, flops, dtype) * self.slowdown, desc, fn, deps)

    def allocate(self, nbytes: int) -> None:
        if self.allocated_bytes + nbytes > self.kind.memory_bytes:
            raise OutOfMemoryError(
                f"dev{self.index} ({self.kind.name}): allocating {nbytes} bytes would exceed "
                f"its {self.kind.memory_bytes} bytes of memory ({self.allocated_bytes} in use)"
            )
        self.allocated_bytes += nbytes
        if self.allocated_bytes > self.peak_bytes:
            self.peak_bytes = self.allocated_bytes

    def free(self, nbytes: int) -> None:
        self.allocated_bytes -= nbytes
