"""What PyTorch keeps per process, kept per rank here (docs/adr/0016-torch-surface.md).

A rank is a process in PyTorch: its default dtype, random generators, grad mode and current
streams are its own. Each rank's ``ProcessState`` lives in the running spawn's state (so it
ends with the spawn, as a process would); main's, and that of kernel programs launched from
main, lives on the context. Nothing here is a module global (C9).
"""

from __future__ import annotations

from coopsim.tensor.dtypes import float32

_SPAWN_KEY = "tensor.processes"
_MAIN_KEY = "tensor.main_process"


class ProcessState:
    """One process's torch state. ``generators``: device index (None: the CPU) ->
    ``coopsim.tensor.random.Generator``, made on first use; ``streams``: device index ->
    the current ``cuda.Stream`` when it is not the default one."""

    __slots__ = ("rank", "default_dtype", "grad_enabled", "generators", "streams")

    def __init__(self, rank):
        self.rank = rank
        self.default_dtype = float32
        self.grad_enabled = True
        self.generators: dict = {}
        self.streams: dict = {}


def _rank(rt):
    """The caller's rank in the running spawn, or None (main, or a program launched from it)."""
    task = rt.current_task()
    return None if task is None or rt.spawn is None else task.rank


def default_dtype(rt):
    """``torch.get_default_dtype()`` of the caller, read without making a rank's process
    state (a rank that never set one has none: ``ones`` in each rank makes no state)."""
    rank = _rank(rt)
    if rank is None:
        return process_state(rt).default_dtype
    table = rt.spawn_state(_SPAWN_KEY)
    state = None if table is None else table.get(rank)
    return float32 if state is None else state.default_dtype


def process_state(rt) -> ProcessState:
    """The caller's process state: its rank's in a spawn, else main's."""
    rank = _rank(rt)
    if rank is None:
        return rt.context_state(_MAIN_KEY, lambda: ProcessState(None))
    table = rt.spawn_state(_SPAWN_KEY)
    if table is None:
        table = {}
        rt.set_spawn_state(_SPAWN_KEY, table)
    state = table.get(rank)
    if state is None:
        state = table[rank] = ProcessState(rank)
    return state

