"""Device memory accounting as ``torch.cuda`` reports it, and its out-of-memory error.

``SimDevice.allocated_bytes`` holds the bytes of the live storages of a device. There is no
caching allocator: ``memory_reserved`` equals ``memory_allocated`` and ``empty_cache`` has
nothing to release. The peak (``max_memory_allocated``) is kept per device on the context,
raised on each allocation and reset by ``reset_peak_memory_stats``.
"""

from __future__ import annotations

from coopsim.engine import OutOfMemoryError

def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def reserve(rt, device, nbytes: int) -> None:
    """Account ``nbytes`` on ``device`` (a ``SimDevice``) or raise ``OutOfMemoryError``
    naming the caller's rank, the device, the requested and the free bytes (torch's message
    shape: ``CUDA out of memory. Tried to allocate ...``)."""
    total = device.kind.memory_bytes
    free = total - device.allocated_bytes
    if nbytes > free:
        task = rt.current_task()
        who = "main" if task is None or task.rank is None else f"rank {task.rank}"
        raise OutOfMemoryError(
            f"CUDA out of memory. Tried to allocate {_gib(nbytes)} ({nbytes} bytes). GPU "
            f"{device.index} has a total capacity of {_gib(total)} ({total} bytes) of which "
            f"{_gib(free)} ({free} bytes) is free. [coopsim: {who} on cuda:{device.index}, device "
            f"kind {device.kind.name!r} of topology {rt.topology.name!r}; {device.allocated_bytes} "
            f"bytes are held by live tensors]")
    device.allocate(nbytes)


class MemoryStats:
    """The ``torch.cuda`` memory functions over the runtime ``rt``; ``index(device, what)``
    resolves a device argument to an index."""

    def __init__(self, rt, index):
        self._rt = rt
        self._index = index

    def _device(self, device, what):
        return self._rt.devices[self._index(device, what)]

    def memory_allocated(self, device=None) -> int:
        """Bytes held by live tensors' storages on ``device`` (default: the current)."""
        return self._device(device, "memory_allocated").allocated_bytes

    def max_memory_allocated(self, device=None) -> int:
        dev = self._device(device, "max_memory_allocated")
        return dev.peak_bytes

    def reset_peak_memory_stats(self, device=None) -> None:
        dev = self._device(device, "reset_peak_memory_stats")
        dev.peak_bytes = dev.allocated_bytes

    def memory_reserved(self, device=None) -> int:
        """No caching allocator: what is allocated is what is reserved."""
        return self._device(device, "memory_reserved").allocated_bytes

    def max_memory_reserved(self, device=None) -> int:
        return self.max_memory_allocated(device)

    def empty_cache(self) -> None:
        """Nothing is cached: freed storages return their bytes at once."""

    def mem_get_info(self, device=None) -> tuple:
        """``(free, total)`` bytes of ``device``."""
        dev = self._device(device, "mem_get_info")
        return dev.kind.memory_bytes - dev.allocated_bytes, dev.kind.memory_bytes
