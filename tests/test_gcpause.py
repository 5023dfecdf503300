"""The collector is paused while the scheduler runs and comes back on every exit path; what
the run left alive is moved to the oldest generation, so no young collection walks it
(coopsim/runtime/gcpause.py, docs/adr/0030-ranks-at-scale.md)."""

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


def test_a_block_leaves_what_it_made_in_the_oldest_generation():
    with gc_paused():
        kept = [Marker() for _ in range(10)]
    assert sum(isinstance(o, Marker) for o in gc.get_objects(2)) == len(kept)
    del kept


def test_a_program_s_own_freeze_is_left_alone():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with gc_paused():
            young = Marker()
        assert gc.get_freeze_count() == frozen
        assert not any(o is young for o in gc.get_objects(2))  # still young
    finally:
        gc.unfreeze()


def test_an_inner_block_leaves_the_collector_as_the_outer_set_it():
    with gc_paused():
        with gc_paused():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
