"""``ctx.launch(kernel, grid, *args)``: user kernels in a small tile language.

A launch is one op on the calling rank's device stream. When the stream reaches it (plus
the device's launch overhead), every program instance of the grid becomes a scheduler task
— a greenlet whose parent is the scheduler's (C4) — running ``kernel(tl, *args)`` with ``tl``
its ``Program``. Each ``load``, ``store`` and ``dot`` costs virtual time and yields, so the
programs and the ranks interleave. The op completes when every program has ended.

Cost model (docs/adr/0007-kernels.md): the grid's programs share the device evenly, so an
access of ``b`` bytes by one of ``G`` programs takes ``b * G / bandwidth``, and a dot of
``f`` FLOPs takes ``f * G / peak``: a grid whose programs do equal work takes the device's
roofline time for the whole kernel.
"""

from __future__ import annotations

import itertools

import numpy as np

from coopsim.engine import Handle, all_of
from coopsim.tensor.ops import flat as flat_view
from coopsim.runtime.scheduler import Task


def _grid(grid) -> tuple[int, int, int]:
    dims = (grid,) if isinstance(grid, int) else tuple(grid)
    if not 1 <= len(dims) <= 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"launch: grid must be an int >= 1 or a tuple of 1 to 3 such ints, got {grid!r}")
    return dims + (1,) * (3 - len(dims))


class Program:
    """The tile language as seen by one program instance (``tl`` in a kernel)."""

    def __init__(self, rt, device, pid: tuple, grid: tuple):
        self._rt = rt  # the runtime port
        self._device = device
        self._pid = pid
        self._grid = grid
        self._share = grid[0] * grid[1] * grid[2]

    def program_id(self, axis: int) -> int:
        return self._pid[self._axis(axis)]

    def num_programs(self, axis: int) -> int:
        return self._grid[self._axis(axis)]

    @staticmethod
    def _axis(axis) -> int:
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
        return axis

    @staticmethod
    def arange(start: int, end: int) -> np.ndarray:
        return np.arange(start, end, dtype=np.int64)

    @staticmethod
    def zeros(shape, dtype=np.float32) -> np.ndarray:
        return np.zeros(shape, dtype=getattr(dtype, "_np", None) or np.dtype(dtype))

    def load(self, tensor, offsets, mask=None, other=0) -> np.ndarray:
        """Elements ``offsets`` (into the tensor's flat, contiguous data); masked-off lanes
        read ``other``. Costs the bytes of the lanes read."""
        flat = flat_view(tensor, "load")
        offsets = np.asarray(offsets)
        _check_bounds(offsets if mask is None else offsets[np.broadcast_to(mask, offsets.shape)],
                      flat.size, "load")
        if mask is None:
            tile = flat[offsets]
            lanes = offsets.size
        else:
            mask = np.broadcast_to(np.asarray(mask, dtype=bool), offsets.shape)
            tile = np.full(offsets.shape, other, dtype=flat.dtype)
            tile[mask] = flat[offsets[mask]]
            lanes = int(mask.sum())
        self._spend_memory(lanes * flat.itemsize)
        return tile

    def store(self, tensor, offsets, value, mask=None) -> None:
        """Write ``value`` (broadcast to ``offsets``' shape) at ``offsets``, where ``mask``."""
        flat = flat_view(tensor, "store")
        offsets = np.asarray(offsets)
        value = np.broadcast_to(np.asarray(value).astype(flat.dtype, copy=False), offsets.shape)
        _check_bounds(offsets if mask is None else offsets[np.broadcast_to(mask, offsets.shape)],
                      flat.size, "store")
        hollow = not flat.flags.writeable  # a timing-only tensor: the store costs, writes nothing
        if mask is None:
            if not hollow:
                flat[offsets] = value
            lanes = offsets.size
        else:
            mask = np.broadcast_to(np.asarray(mask, dtype=bool), offsets.shape)
            if not hollow:
                flat[offsets[mask]] = value[mask]
            lanes = int(mask.sum())
        self._spend_memory(lanes * flat.itemsize)

    def dot(self, a, b) -> np.ndarray:
        """Matrix product of two 2-D tiles, accumulated in float32 for float16 (as Triton)."""
        a, b = np.asarray(a), np.asarray(b)
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise ValueError(f"dot: expected 2-D tiles (M, K) and (K, N), got {a.shape} and {b.shape}")
        acc = np.float32 if a.dtype == np.float16 else np.result_type(a, b)
        out = a.astype(acc) @ b.astype(acc)
        flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
        self._spend(self._device.compute_ns(flops * self._share, np.dtype(a.dtype).name))
        return out

    def _spend_memory(self, nbytes: int) -> None:
        self._spend(self._device.memory_ns(nbytes * self._share))

    def _spend(self, ns: float) -> None:
        rt = self._rt
        rt.wait(rt.engine.timer(ns))


def _check_bounds(offsets: np.ndarray, size: int, what: str) -> None:
    if offsets.size and (offsets.min() < 0 or offsets.max() >= size):
        raise IndexError(f"{what}: offsets must lie in [0, {size}) (unmasked lanes), got "
                         f"{offsets.min()}..{offsets.max()}; mask the lanes past the end")


def launch(rt, kernel, grid, *args) -> Handle:
    """Enqueue ``kernel`` over ``grid`` on the caller's device stream; return the op's Handle.

    Every Tensor argument is taken as written by the kernel: a host read of it waits for the
    kernel (C8).
    """
    if not callable(kernel):
        raise TypeError(f"launch: kernel must be callable, got {kernel!r}")
    dims = _grid(grid)
    device = rt.current_device()
    owner = rt.current_task()
    number = rt.next_launch()
    name = getattr(kernel, "__name__", "kernel")
    tensors = [a for a in args if hasattr(a, "_array") and hasattr(a, "_storage")]

    def start() -> Handle:
        rank = owner.rank if owner is not None else None
        ended = []  # one Handle per program, completed when its task ends
        for flat, pid in enumerate(itertools.product(range(dims[0]), range(dims[1]), range(dims[2]))):
            tl = Program(rt, device, pid, dims)
            end = Handle(f"kernel {name}{list(pid)} ended")
            task = Task(f"kernel {name}{list(pid)} of {owner.name if owner is not None else 'main'}",
                        rank, (-1 if rank is None else rank, number, flat), rt.engine.now_ns,
                        owner=owner, on_end=lambda _task, end=end: rt.engine.schedule(end, rt.engine.now_ns),
                        device=device.index)
            ended.append(end)
            rt.add_task(task, kernel, (tl, *args))
        return all_of(rt.engine, ended, f"kernel {name} (launch {number}) programs")

    op = device.stream.enqueue_work(f"kernel {name} (launch {number}) on dev{device.index}",
                                    start, device.kind.launch_overhead_ns)
    for t in tensors:
        t._storage.last_write = op
    return op

