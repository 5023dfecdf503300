"""The pytest plugin: ``pip install coopsim`` registers it (the ``pytest11`` entry point).

- fixture ``coopsim_ctx``: a fresh ``RuntimeContext`` (``--coopsim-topology``,
  ``--coopsim-seed``), closed after the test; a test after which a greenlet coopsim created
  is still alive fails at teardown, naming it (C4);
- marker ``@pytest.mark.coopsim(nprocs=2, topology=None, seed=0, schedules=1,
  strategy="random", faults=None)`` on ``def test_x(rank, ctx)``: the test runs as a spawn of
  ``nprocs`` ranks (other fixtures still work), under ``schedules`` schedules
  (``ctx.sim.explore``), with ``faults`` (dicts or YAML: ``coopsim.testing.faults``);
  ``--coopsim-schedules``/``--coopsim-seed``/``--coopsim-topology``/``--coopsim-strategy``
  override the marker, ``--coopsim-replay TOKEN`` reruns one schedule instead;
- a test that fails with a coopsim error reports coopsim's own report (deadlock table,
  mismatch, timeout, flight record, replay token) instead of a traceback through the
  scheduler.

The marked function is collected through a stand-in whose signature drops ``rank`` and
``ctx`` (pytest would look for fixtures of those names); it cannot also be parametrized.
"""

from __future__ import annotations

import gc
import inspect

import pytest
from greenlet import greenlet

from coopsim.context import RuntimeContext
from coopsim.errors import ProcessException, SimulationError
from coopsim.runtime.frames import is_user_file, user_location
from coopsim.testing.explore import STRATEGIES, Explorer, ScheduleFailure

MARKER = "coopsim"
DEFAULTS = {"nprocs": 2, "topology": None, "seed": 0, "schedules": 1, "strategy": "random", "faults": None}
_REPORTED = (SimulationError, ProcessException, ScheduleFailure)
_RANK_CONTEXT = object()  # stands for each schedule's fresh context in the spawn's args


def pytest_addoption(parser):
    group = parser.getgroup("coopsim", "coopsim: simulated distributed tests")
    group.addoption("--coopsim-schedules", type=int, metavar="N",
                    help="run each @pytest.mark.coopsim test under N schedules (default: the marker's)")
    group.addoption("--coopsim-seed", type=int, metavar="S", help="seed of contexts and schedules")
    group.addoption("--coopsim-topology", metavar="NAME", help="topology of contexts (bundled name or YAML path)")
    group.addoption("--coopsim-strategy", choices=STRATEGIES, help="schedule exploration strategy")
    group.addoption("--coopsim-replay", metavar="TOKEN",
                    help="rerun the selected coopsim tests under exactly the schedule TOKEN names")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "coopsim(nprocs=2, topology=None, seed=0, schedules=1, strategy='random', faults=None): "
        "run test_x(rank, ctx) as a coopsim spawn of nprocs ranks, under that many schedules, with "
        "the faults (a list of dicts or YAML, see coopsim.testing.faults)")


def settings(config, marker) -> dict:
    """The marker's settings, overridden by the command line's, checked."""
    unknown = sorted(set(marker.kwargs) - set(DEFAULTS))
    if marker.args or unknown:
        raise pytest.UsageError(f"@pytest.mark.coopsim takes keyword arguments {sorted(DEFAULTS)}; "
                                f"got positional {marker.args} and unknown {unknown}")
    result = {**DEFAULTS, **marker.kwargs}
    for key in ("schedules", "seed", "topology", "strategy"):
        value = config.getoption(f"--coopsim-{key}")
        if value is not None:
            result[key] = value
    return result


@pytest.fixture
def coopsim_ctx(request):
    """A fresh ``RuntimeContext``, closed after the test; a leaked live greenlet fails it."""
    before = set(_live_greenlets())
    ctx = RuntimeContext(request.config.getoption("--coopsim-topology"),
                                 seed=request.config.getoption("--coopsim-seed") or 0)
    closing = None
    try:
        yield ctx
    finally:
        try:
            ctx.close()
        except Exception as e:  # e.g. a rank that swallowed the abort and was discarded
            closing = e
    leaked = [g for g in _live_greenlets() if g not in before]
    if leaked:
        pytest.fail("coopsim: the test left live greenlets behind (C4): " +
                    "; ".join(_describe_greenlet(g) for g in leaked) +
                    (f"\nclosing the context: {closing}" if closing is not None else ""), pytrace=False)
    if closing is not None:
        raise closing


def _live_greenlets() -> list:
    """Live greenlets running (or about to run) coopsim's code, found through gc."""
    gc.collect()
    return [g for g in gc.get_objects() if isinstance(g, greenlet) and not g.dead
            and g.parent is not None and _coopsim_frame(g) is not None]


def _coopsim_frame(g):
    """The outermost frame of a suspended greenlet if it is coopsim's (a started greenlet
    has no ``run`` any more); for one not started yet, its ``run``."""
    frame = g.gr_frame
    if frame is None:
        run = getattr(g, "run", None)
        return run if (getattr(run, "__module__", None) or "").startswith("coopsim") else None
    while frame.f_back is not None:
        frame = frame.f_back
    return None if is_user_file(frame.f_code.co_filename) else frame


def _describe_greenlet(g) -> str:
    outer = _coopsim_frame(g)
    task = outer.f_locals.get("task") if g.gr_frame is not None else None
    name = getattr(task, "name", "a coopsim greenlet")
    return f"{name} suspended at {user_location(g.gr_frame) or 'an unknown place'}"


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector, name, obj):
    """Collect a marked ``test_x(rank, ctx)`` through a runner without those parameters."""
    if not (inspect.isfunction(obj) and collector.funcnamefilter(name)):
        return None
    marks = [m for m in getattr(obj, "pytestmark", ()) if m.name == MARKER]
    marker = marks[0] if marks else collector.get_closest_marker(MARKER)  # or the module's/class's
    if marker is None:
        return None
    return pytest.Function.from_parent(collector, name=name, callobj=_runner(obj, marker))


def _runner(fn, marker):
    params = inspect.signature(fn).parameters
    missing = [p for p in ("rank", "ctx") if p not in params]
    fixtures = [p for p in params.values() if p.name not in ("rank", "ctx")]
    wants_request = "request" in params

    def run_coopsim_test(request, **kwargs):
        if missing:
            raise pytest.UsageError(f"{fn.__name__}: a @pytest.mark.coopsim test takes parameters "
                                    f"'rank' and 'ctx'; it lacks {missing}")
        if wants_request:
            kwargs["request"] = request
        s = settings(request.config, marker)
        explorer = Explorer(_RANK_CONTEXT, lambda: RuntimeContext(s["topology"], seed=s["seed"]),
                            prepare=lambda ctx: s["faults"] and ctx.sim.faults.load(s["faults"]))

        def rank_main(rank, ctx):
            fn(rank=rank, ctx=ctx, **kwargs)

        args = (_RANK_CONTEXT,)
        token = request.config.getoption("--coopsim-replay")
        if token:
            explorer.replay(token, rank_main, args, s["nprocs"])
        else:
            explorer.explore(rank_main, args, s["nprocs"], schedules=s["schedules"], seed=s["seed"],
                             strategy=s["strategy"])

    request_param = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    run_coopsim_test.__signature__ = inspect.Signature(
        [request_param] + [p for p in fixtures if p.name != "request"])
    run_coopsim_test.__name__ = fn.__name__
    run_coopsim_test.__qualname__ = fn.__qualname__
    run_coopsim_test.__module__ = fn.__module__
    run_coopsim_test.__doc__ = fn.__doc__
    run_coopsim_test.pytestmark = list(getattr(fn, "pytestmark", ()))
    run_coopsim_test.coopsim_test = fn
    return run_coopsim_test


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A coopsim failure of a coopsim test shows coopsim's report, not the scheduler's stack."""
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or call.excinfo is None or not isinstance(call.excinfo.value, _REPORTED):
        return
    if item.get_closest_marker(MARKER) is None and "coopsim_ctx" not in getattr(item, "fixturenames", ()):
        return
    error = call.excinfo.value
    head = f"coopsim: {type(error).__name__} in {item.name}"
    marker = item.get_closest_marker(MARKER)
    if marker is not None:
        s = settings(item.config, marker)
        head += " (" + ", ".join(f"{k}={s[k]!r}" for k in DEFAULTS) + ")"
    report.longrepr = f"{head}\n{error}"
