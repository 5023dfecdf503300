"""The shortcuts of the speed work (docs/adr/0027-speed.md, "Scale and the wait path") keep
what they replace: a waited handle still wakes its task, after its callbacks; a route is
still checked; alpha/beta is still the slowest ring neighbour's, computed once per group; a
user frame is still told from coopsim's own."""

from __future__ import annotations

import os

import pytest

import coopsim
from coopsim.distributed.planning import Planner
from coopsim.engine import Engine, Handle, Network
from coopsim.runtime import frames
from coopsim.topology import load_topology


def test_c5_engine_moves_a_waited_handles_waiters_to_ready_after_its_callbacks():
    engine = Engine()
    log = engine.ready
    waited, alone, shared = engine.timer(5), engine.timer(5), engine.timer(5)
    waited.waiters = "a task"
    shared.waiters = ["task b", "task c"]
    waited.add_callback(lambda h: log.append(("callback", h.done, h.time_ns)))
    alone.add_callback(lambda h: log.append("alone's callback"))
    assert engine.step_instant()
    assert log == [("callback", True, 5.0), "a task", "alone's callback", "task b", "task c"]
    assert waited.waiters is None and shared.waiters is None  # moved, not copied


def test_c3_engine_does_not_wake_a_handle_whose_waiter_was_removed():
    engine = Engine()
    h = engine.timer(3)
    h.waiters = "a task"
    h.waiters = None  # Scheduler.unregister: an error was delivered to the task first
    engine.step_instant()
    assert h.done and engine.ready == []


def test_c5_an_alarm_with_waiters_is_woken_when_it_rings():
    engine = Engine()
    alarm = engine.alarm(Handle("alarm"), 4)
    alarm.waiters = "a task"
    engine.timer(10)  # alarms ring only when the simulation gets there through other work
    engine.step_instant()
    assert engine.ready == ["a task"] and alarm.time_ns == 4 and alarm.waiters is None


def test_c2_timer_handles_are_complete_handles():
    engine = Engine()
    h = engine.timer(7)
    assert (h.done, h.time_ns, h.callbacks, h.waiters, h.desc) == (False, None, None, None, "timer(7 ns)")
    assert engine.timer(1, ("sleep {}", 1)).desc == "sleep 1"


def test_network_checks_a_route_tuple_once_and_still_rejects_bad_ones():
    topo = load_topology({"name": "sw4", "device_kinds": {"gpu": {
        "memory_bytes": 1 << 30, "memory_bandwidth_GBps": 100, "peak_flops": {"float32": 1e12},
        "launch_overhead_ns": 0}}, "devices": [{"kind": "gpu", "count": 4}],
        "links": [{"pattern": "switch", "bandwidth_GBps": 10, "latency_ns": 100}]})
    network = Network(Engine())
    route = topo.route(0, 1)
    states = network._resolve_route(route)
    assert network._resolve_route(route) is states  # the cache: the same tuple, checked once
    assert network._resolve_route(tuple(route)) is states  # tuple(t) is t: still one tuple
    assert [s.link for s in states] == list(route)
    with pytest.raises(ValueError, match="not contiguous"):
        network._resolve_route((route[1], route[0]))
    with pytest.raises(ValueError, match="tuple of links"):
        network._resolve_route(list(route))


def test_planner_computes_alpha_beta_once_per_group_and_spawn(monkeypatch):
    calls = []
    original = Planner._alpha_beta

    def counting(self, devices, rails=None):
        calls.append(tuple(devices))
        return original(self, devices, rails)

    monkeypatch.setattr(Planner, "_alpha_beta", counting)
    seen = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        dist.barrier()
        t = ctx.ones(4) * (rank + 1)
        for _ in range(3):
            dist.all_reduce(t)
        seen[rank] = t[0].item()

    for model in ("analytic", "transfer"):
        calls.clear()
        with coopsim.RuntimeContext("dgx_h100", ccl={"model": model}) as ctx:
            ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=4)
        assert calls == [(0, 1, 2, 3)], model
        assert seen == {r: 160.0 for r in range(4)}  # 1+2+3+4 = 10, then 40, then 160


def test_is_user_file_matches_the_normalised_definition(tmp_path):
    package = frames._PACKAGE_DIR
    cases = [os.path.join(package, "runtime", "port.py"), str(tmp_path / "user.py"),
             os.path.join(package, "..", "tests", "x.py"), package + "./runtime/port.py",
             package.rstrip(os.sep) + os.sep + os.sep + "port.py", "relative/user.py", "<string>"]
    for filename in cases:
        expected = not os.path.abspath(filename).startswith(package)
        assert frames.is_user_file(filename) is expected, filename
