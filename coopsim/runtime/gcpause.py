"""The garbage collector is paused while the scheduler runs (docs/adr/0027-speed.md).

A run allocates many small objects (handles, closures, tuples) that reference counting frees,
while the live ranks' greenlets and frames make every automatic collection walk a large
heap and find nothing: at 1,000+ ranks that walk was a third to two thirds of the run. The
collector is re-enabled on every exit path (return, error, KeyboardInterrupt).

Everything the run left alive is young when the collector comes back, so the first automatic
collection would walk all of it (at 100,000 ranks, seconds) and find nothing. Instead it is
moved into the oldest generation (``gc.freeze()`` then ``gc.unfreeze()``: two list splices),
as if it had survived the young collections: cyclic garbage of the run is found by the next
full collection, as for any long-lived object (docs/adr/0030-ranks-at-scale.md). This is
skipped when the program froze objects itself (``gc.get_freeze_count()``), whose freeze
``unfreeze`` would undo.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def gc_paused():
    """Disable automatic collection for the block (re-entrant: an inner block leaves the
    collector as the outer one set it); on leaving, what the block left alive is old."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()
