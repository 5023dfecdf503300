"""The real ``torch`` module as a worker sees it through the bridge: torch plus ``sim``.

``TorchLike`` is a module object that forwards every attribute to the real ``torch`` and adds
one: ``sim``. The global ``torch`` module is never modified (``import torch`` elsewhere in the
process sees no ``sim``), and ``torch_like.distributed``, ``torch_like.cuda`` ... are torch's
own sub-modules. ``torch_like.wait`` is torch's ``torch.wait`` (it waits on a
``torch.futures.Future``), which is what coopsim's ``ctx.wait`` mirrors.

``TorchSim`` gives coopsim's ``ctx.sim`` names a wall-clock meaning, so a worker that uses them
keeps running unchanged (docs/adr/0014-pytorch-bridge.md):
- ``now_ns()``: ``time.monotonic_ns()`` (an int; coopsim's virtual time is a float);
- ``timer(ns)``: sleeps ``ns`` wall nanoseconds, then returns a completed
  ``torch.futures.Future``; so ``torch.wait(torch.sim.timer(ns))`` takes ``ns``, as
  ``ctx.wait(ctx.sim.timer(ns))`` takes ``ns`` of virtual time. (Not a future completed later
  by a thread: ``torch.wait`` holds the GIL while it waits, so no Python thread could ever
  complete it — a hang that not even a signal handler can interrupt);
- ``event(name)``: a future completed by its ``set()``. Process-local: on real processes a
  rank cannot set another rank's event (coopsim's ranks share memory; processes do not), and
  ``torch.wait`` on an event that is never set hangs, where coopsim reports a deadlock;
- ``trace(path)``: a context manager that records this process with ``torch.profiler`` and
  writes a Chrome trace to ``path`` (``<stem>.rank<r><suffix>`` when a process group of more
  than one rank is initialized, so ranks do not overwrite each other);
- ``seed``: the seed given to ``launch`` (the bridge seeds nothing by itself).
Anything else of coopsim's ``sim`` (fault injection, ...) has no real-process meaning and raises
an ``AttributeError`` that says so.
"""

from __future__ import annotations

import contextlib
import time
import types
from pathlib import Path

MISSING_TORCH = ("backend='torch' needs PyTorch, which is not installed; install coopsim's "
                 "torch extra: pip install 'coopsim[torch]' (or run with backend='sim')")


def import_torch():
    """The real ``torch`` module, or an ImportError that names the extra to install."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(MISSING_TORCH) from e
    return torch


class TorchSim:
    """``torch_like.sim``: coopsim's ``ctx.sim`` names with their wall-clock meaning."""

    def __init__(self, torch, seed: int = 0):
        self._torch = torch
        self.seed = seed
        self._event_type = type("Event", (torch.futures.Future,), {"set": _set})

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def timer(self, ns):
        if ns > 0:
            time.sleep(ns / 1e9)
        future = self._torch.futures.Future()
        future.set_result(None)
        return future

    def event(self, name: str = "event"):
        return self._event_type()

    @contextlib.contextmanager
    def trace(self, path):
        path = Path(path)
        dist = self._torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            path = path.with_name(f"{path.stem}.rank{dist.get_rank()}{path.suffix}")
        from torch import profiler

        with profiler.profile(activities=[profiler.ProfilerActivity.CPU]) as recording:
            yield recording
        recording.export_chrome_trace(str(path))

    def __getattr__(self, name):
        raise AttributeError(
            f"torch.sim.{name} is coopsim-only: it has no meaning on real processes (the "
            f"bridge's torch.sim offers now_ns, timer, event, trace, seed); see the README's "
            f"'Running on real PyTorch'")


def _set(event) -> None:
    """coopsim's ``Event.set()`` on a ``torch.futures.Future``."""
    event.set_result(None)


class TorchLike(types.ModuleType):
    """The real ``torch`` (every attribute forwarded) plus ``sim``; torch itself is untouched."""

    def __init__(self, torch, sim: TorchSim):
        super().__init__("torch", torch.__doc__)
        self.__dict__["_torch"] = torch
        self.sim = sim

    def __getattr__(self, name):
        return getattr(self.__dict__["_torch"], name)

    def __dir__(self):
        return sorted(set(dir(self.__dict__["_torch"])) | {"sim"})

    def __repr__(self) -> str:
        return f"<torch {self.__dict__['_torch'].__version__} with coopsim's sim namespace>"
