"""Argument errors are raised at the call, in the calling rank, with PyTorch's exception type
and a message naming the argument (issue 11, problem 5)."""

import inspect

import pytest

import coopsim
from coopsim.topology import TopologyError, load_topology

GPU = {"memory_bytes": 80e9, "memory_bandwidth_GBps": 3000, "peak_flops": {"float32": 60e12},
       "launch_overhead_ns": 3000}


def topology(count, **top):
    return {"name": "t", "device_kinds": {"gpu": dict(GPU)},
            "devices": [{"kind": "gpu", "count": count}],
            "links": [{"pattern": "switch", "bandwidth_GBps": 50, "latency_ns": 700}], **top}


def raised_in_rank(body, nprocs=2, ccl=None, rank=0):
    """Run ``body(rank, ctx, dist)`` in every rank; return rank ``rank``'s exception and the
    traceback text spawn reported for it."""
    def worker(r, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        body(r, ctx, dist)

    with coopsim.RuntimeContext(ccl=ccl) as ctx:
        with pytest.raises(coopsim.SpawnException) as info:
            ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=nprocs)
    return info.value.errors[rank], info.value.msg


def line_containing(fn, marker):
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if marker in line)


@pytest.mark.parametrize("model", ["transfer", "analytic"])
@pytest.mark.parametrize("call", ["broadcast", "reduce"])
def test_rooted_collective_without_a_root_raises_at_the_call(model, call):
    def body(rank, ctx, dist):
        getattr(dist, call)(ctx.ones(4))  # CALL-WITHOUT-ROOT

    error, msg = raised_in_rank(body, ccl={"model": model})
    assert type(error) is ValueError  # torch: _canonicalize_group_rank
    assert str(error) == "Must specify global_rank or group_rank"
    assert f"line {line_containing(body, 'CALL-WITHOUT-ROOT')}" in msg


@pytest.mark.parametrize("kwargs, name", [({"src": "0"}, "src"), ({"src": 1.0}, "src"),
                                           ({"group_src": 0.0}, "group_src")])
def test_root_of_the_wrong_type_is_a_type_error_naming_it(kwargs, name):
    error, _ = raised_in_rank(lambda rank, ctx, dist: dist.broadcast(ctx.ones(4), **kwargs))
    assert type(error) is TypeError
    assert f"broadcast: {name} must be an int" in str(error)


def test_reduce_dst_of_the_wrong_type_is_a_type_error():
    error, _ = raised_in_rank(lambda rank, ctx, dist: dist.reduce(ctx.ones(4), dst=1.0))
    assert type(error) is TypeError and "reduce: dst must be an int" in str(error)


def test_a_group_used_by_a_rank_outside_it_names_the_group_and_the_rank():
    shared = {}

    def body(rank, ctx, dist):
        group = dist.new_group([0, 1])
        if rank == 0:
            shared["group"] = group  # ranks 0 and 2 run in one round: 0 first
        if rank == 2:
            dist.all_reduce(ctx.ones(4), group=shared["group"])

    error, _ = raised_in_rank(body, nprocs=3, rank=2)
    assert type(error) is ValueError
    assert "all_reduce: rank 2 is not a member of group group1 (ranks [0-1])" in str(error)


def test_wait_on_something_that_is_not_a_handle_names_the_argument(ctx):
    with pytest.raises(TypeError, match=r"wait: handle must be a coopsim Handle .*got 5 \(int\)"):
        ctx.wait(5)


def test_tensor_of_another_context_is_rejected_in_a_collective_and_an_op():
    other = coopsim.RuntimeContext()
    foreign = other.ones(4)

    error, _ = raised_in_rank(lambda rank, ctx, dist: dist.all_reduce(foreign))
    assert type(error) is RuntimeError
    assert "this tensor belongs to another RuntimeContext" in str(error)
    with coopsim.RuntimeContext() as ctx:
        with pytest.raises(RuntimeError, match="this tensor belongs to another RuntimeContext"):
            ctx.ones(4) + foreign


@pytest.mark.parametrize("ns", [float("inf"), -1, float("nan")])
def test_timer_rejects_non_finite_and_negative_times(ctx, ns):
    with pytest.raises(ValueError, match="timer: ns must be a finite number >= 0"):
        ctx.sim.timer(ns)


def test_timer_rejects_a_non_number(ctx):
    with pytest.raises(TypeError, match="timer: ns must be a finite number >= 0, got '5'"):
        ctx.sim.timer("5")


def test_topology_above_the_device_bound_is_rejected_at_once():
    with pytest.raises(TopologyError, match=r"devices\[0\]\.count.*at most 16384 devices"):
        load_topology(topology(10_000_000))


def test_topology_device_bound_is_overridable():
    assert len(load_topology(topology(6, max_devices=6)).devices) == 6
    with pytest.raises(TopologyError, match=r"at most 5 devices"):
        load_topology(topology(6, max_devices=5))


def test_event_set_rejects_an_infinite_time(ctx):
    with pytest.raises(ValueError, match="at_ns must be a finite time"):
        ctx.sim.event("e").set(float("inf"))
