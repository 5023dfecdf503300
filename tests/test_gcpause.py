"""The collector is paused while the scheduler runs and comes back on every exit path, and
what a paused block leaves is collected the usual way (coopsim/runtime/gcpause.py,
docs/adr/0030-ranks-at-scale.md)."""

import gc

import pytest

import coopsim
from coopsim.runtime.gcpause import gc_paused


class Marker:
    pass


def _run(fail: bool):
    seen = {}

    def worker(rank, ctx):
        seen[rank] = gc.isenabled()
        ctx.distributed.init_process_group("gloo")
        ctx.distributed.barrier()
        if fail:
            raise ValueError("boom")

    with coopsim.RuntimeContext("small") as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=4)
    return seen


@pytest.mark.parametrize("fail", [False, True])
def test_collector_is_off_in_the_run_and_back_after_it(fail):
    assert gc.isenabled()
    if fail:
        with pytest.raises(coopsim.errors.SpawnException):
            _run(fail)
    else:
        assert _run(fail) == {r: False for r in range(4)}
    assert gc.isenabled()


def test_cycles_made_in_a_block_are_found_by_a_young_collection():
    """What a block leaves is young, so its cyclic garbage goes the usual way; moved to the
    oldest generation it waited for a full collection, which a loop of contexts never got."""
    with gc_paused():
        for _ in range(50):
            a, b = Marker(), Marker()
            a.other, b.other = b, a
        del a, b
    assert gc.collect(0) >= 100


def test_an_inner_block_leaves_the_collector_as_the_outer_set_it():
    with gc_paused():
        with gc_paused():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
