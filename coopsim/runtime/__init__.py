"""The scheduler, tasks, spawn, and the runtime port the layers above use."""

from coopsim.runtime.port import Runtime

__all__ = ["Runtime"]
