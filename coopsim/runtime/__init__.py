"""RuntimeContext, the scheduler and spawn."""

from coopsim.runtime.context import RuntimeContext

__all__ = ["RuntimeContext"]
