import gc

import pytest
from greenlet import greenlet

import coopsim

pytest_plugins = ["pytester"]


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
