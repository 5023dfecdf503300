import gc

import pytest
from greenlet import greenlet
from hypothesis import settings

import coopsim

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
    """Greenlets created by coopsim that are still alive, found through gc, not coopsim."""
    gc.collect()
    found = []
    for obj in gc.get_objects():
        if isinstance(obj, greenlet) and not obj.dead and obj.parent is not None:
            run = getattr(obj, "run", None)
            module = getattr(run, "__module__", "") or ""
            if module.startswith("coopsim"):
                found.append(obj)
    return found
