import gc
import os

import pytest
from greenlet import greenlet
from hypothesis import settings

import coopsim
from coopsim.runtime.scheduler import Scheduler

pytest_plugins = ["pytester"]

# Property tests are bounded by pytest-timeout, not by hypothesis' per-example deadline (a
# loaded 2-core machine would make a wall-clock deadline flaky), and draw the same examples
# on every run (the suite is deterministic, as the library).
settings.register_profile("coopsim", deadline=None, derandomize=True)
settings.load_profile("coopsim")


@pytest.fixture
def ctx():
    with coopsim.RuntimeContext() as c:
        yield c


def live_coopsim_greenlets():
    """Greenlets created by coopsim that are still alive, found through gc, not coopsim.

    A greenlet not yet started is coopsim's if its ``run`` is; a started one (greenlet then
    drops ``run``) if a frame of its suspended stack is in the coopsim package. Tasks a
    scheduler discarded on purpose (they refused to end; docs/adr/0018) are not counted."""
    gc.collect()
    found = []
    objects = gc.get_objects()
    # type(), not isinstance(): isinstance reads __class__, which deprecated proxies of other
    # libraries in the heap (torch.distributed.reduce_op) answer with a warning
    discarded = {id(g) for s in objects if type(s) is Scheduler for g in s.discarded}
    for obj in objects:
        if type(obj) is greenlet and not obj.dead and obj.parent is not None \
                and id(obj) not in discarded:
            run = getattr(obj, "run", None)
            module = getattr(run, "__module__", "") or ""
            if module.startswith("coopsim") or _runs_coopsim_code(obj.gr_frame):
                found.append(obj)
    return found


def _runs_coopsim_code(frame):
    while frame is not None:
        if frame.f_code.co_filename.startswith(_COOPSIM_DIR):
            return True
        frame = frame.f_back
    return False


_COOPSIM_DIR = os.path.dirname(os.path.abspath(coopsim.__file__)) + os.sep
