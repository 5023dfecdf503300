"""Schedules stored as columns (ADR-0027): the columnar ring equals its transfer-list
definition, steps made from columns check and read like steps made from ``Xfer`` objects, and
``Compiled`` makes a step's tables only when a run reaches it."""

import numpy as np
import pytest

from coopsim.distributed.algorithms import Schedule, Step, Xfer, build_schedule
from coopsim.distributed.algorithms.ring import all_reduce_inplace
from coopsim.distributed.algorithms.schedule import BUFFERS, make_schedule
from coopsim.distributed.execution import Compiled


@pytest.mark.parametrize("p", [1, 2, 3, 5, 8, 13])
def test_columnar_ring_all_reduce_is_the_transfer_list_ring(p):
    for n in (0, 1, p - 1, p, 3 * p + 2):
        built = build_schedule("all_reduce", "ring", p, n)
        listed = make_schedule("all_reduce", "ring", p, all_reduce_inplace(list(range(p)), 0, n), n, n)
        assert built == listed and hash(built) == hash(listed)
        assert [step.xfers for step in built.steps] == [step.xfers for step in listed.steps]


def test_a_step_from_columns_reads_as_its_transfers():
    out, tmp = BUFFERS.index("out"), BUFFERS.index("tmp")
    step = Step.of_columns([0, 1], [1, 0], out, [0, 2], tmp, 1, [2, 1], [True, False])
    assert step.xfers == (Xfer(0, 1, "out", 0, "tmp", 1, 2, True),
                          Xfer(1, 0, "out", 2, "tmp", 1, 1, False))
    assert step == Step(step.xfers) and len(step) == 2
    with pytest.raises(ValueError):
        step.count[0] = 5  # a built step never changes


def test_check_finds_problems_in_columnar_steps_and_unsorted_pairs():
    out = BUFFERS.index("out")
    fine = Step.of_columns([2, 0, 1], [0, 1, 2], out, 0, out, 0, 1, False)  # distinct, unsorted
    Schedule("all_reduce", "mine", 3, (fine,), 1, 1, None)
    repeated = Step.of_columns([2, 0, 2], [0, 1, 0], out, 0, out, 0, 1, False)
    with pytest.raises(ValueError, match=r"two transfers between one pair .* step 1: Xfer\(src=2, dst=0, src_buf=.out."):
        Schedule("all_reduce", "mine", 3, (fine, repeated), 1, 1, None)
    far = Step.of_columns([0, 1], [1, 3], out, 0, out, 0, 1, False)
    with pytest.raises(ValueError, match=r"rank out of range .* step 1: Xfer\(src=1, dst=3"):
        Schedule("all_reduce", "mine", 3, (fine, far), 1, 1, None)
    into_in = Step.of_columns([0], [1], out, 0, BUFFERS.index("in"), 0, 1, False)
    with pytest.raises(ValueError, match="bad buffer"):
        Schedule("all_reduce", "mine", 3, (into_in,), 1, 1, None)


def test_compiled_makes_a_step_table_on_first_use_and_keeps_it():
    schedule = build_schedule("all_reduce", "ring", 4, 8)
    compiled = Compiled(schedule)
    items, eager = compiled.table(0)
    assert compiled.table(0)[0] is items
    assert items == [[0, 3], [0, 1], [1, 2], [2, 3]]  # rank r: item r (its send), r-1 (its receive)
    assert eager == [True] * 4  # the ring reads one part and writes another: no snapshot
    assert np.array_equal(schedule.steps[0].dst, [1, 2, 3, 0])
