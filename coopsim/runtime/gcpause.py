"""The garbage collector is paused while the scheduler runs (docs/adr/0027-speed.md).

A run allocates many small objects (handles, closures, tuples) that reference counting frees,
while the live ranks' greenlets and frames make every automatic collection walk a large
heap and find nothing: at 1,000+ ranks that walk was a third to two thirds of the run. The
collector is re-enabled on every exit path (return, error, KeyboardInterrupt); cyclic garbage
of the run is then collected by the next automatic collection, as usual.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def gc_paused():
    """Disable automatic collection for the block (re-entrant: an inner block leaves the
    collector as the outer one set it)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
