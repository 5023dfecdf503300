"""The garbage collector is paused while the scheduler runs (docs/adr/0027-speed.md).

A run allocates many small objects (handles, closures, tuples) that reference counting frees,
while the live ranks' greenlets and frames make every automatic collection walk a large
heap and find nothing: at 1,000+ ranks that walk was a third to two thirds of the run. The
collector is re-enabled on every exit path (return, error, KeyboardInterrupt); what the block
left alive is young, so the next automatic collection walks it once and the usual
generations take over.

Not done (docs/adr/0030-ranks-at-scale.md): moving the survivors straight to the oldest
generation (``gc.freeze()`` then ``gc.unfreeze()``) would skip that walk, but full collections
are paced by the objects that *survive* young collections, which that move does not count: a
loop of contexts then grew without bound (40 contexts of 2,000 ranks: 104 MiB -> 908 MiB, no
full collection). Pausing the collector while a context or a spawn's tasks are built has the
same flaw in a milder form (fewer collections, so earlier contexts' cycles wait longer).
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
