"""One parsed topology serves every context that loads the same config, and is immutable so
that sharing it is safe (coopsim/topology/__init__.py, docs/adr/0030-ranks-at-scale.md)."""

import dataclasses
import os

import pytest

import coopsim
from coopsim.topology import TopologyError, configs_dir, load_topology
from coopsim.topology.schema import load_file


def _spec(bandwidth=50):
    return {"name": "fc3", "device_kinds": {"gpu": {
        "memory_bytes": 1 << 30, "memory_bandwidth_GBps": 100, "peak_flops": {"float32": 1e12},
        "launch_overhead_ns": 0}}, "devices": [{"kind": "gpu", "count": 3}],
        "links": [{"pattern": "fully_connected", "bandwidth_GBps": bandwidth, "latency_ns": 100}]}


def test_contexts_of_one_bundled_name_share_its_topology():
    with coopsim.RuntimeContext("ring8") as a, coopsim.RuntimeContext("ring8") as b:
        assert a.topology is b.topology
    assert load_topology("ring8") is not load_topology("torus4x4")


def test_equal_mappings_share_and_different_ones_do_not():
    assert load_topology(_spec()) is load_topology(_spec())
    assert load_topology(_spec(60)) is not load_topology(_spec())


def test_a_mapping_json_would_not_keep_exactly_is_parsed_each_time():
    spec = _spec()
    spec["links"] = tuple(spec["links"])  # JSON turns it into a list
    assert load_topology(spec) is not load_topology(spec)


def test_an_invalid_spec_is_never_kept():
    bad = _spec()
    bad["links"][0]["latency_ns"] = -1
    for _ in range(2):
        with pytest.raises(TopologyError, match="latency_ns"):
            load_topology(bad)


def test_a_changed_file_is_parsed_again(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text((configs_dir() / "ring8.yaml").read_text())
    first = load_topology(path)
    assert load_topology(str(path)) is first
    path.write_text(path.read_text().replace("bandwidth_GBps: 50", "bandwidth_GBps: 25"))
    os.utime(path, ns=(1, 1))
    second = load_topology(path)
    assert second is not first and second.links[0].bandwidth_GBps == 25


def test_a_shared_topology_cannot_be_changed():
    t = load_topology("dgx_h100")
    with pytest.raises(AttributeError, match="immutable"):
        t.name = "other"
    with pytest.raises(TypeError):
        t.in_network_reduction["sw0"] = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.links[0].latency_ns = 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.devices[0].node = 3
    with pytest.raises(TypeError):  # a kind's FLOP/s would otherwise change for every context
        t.devices[0].kind.peak_flops["float32"] = 1.0


def test_a_device_kind_pickles_and_keeps_its_read_only_flops():
    import pickle

    kind = load_topology("dgx_h100").devices[0].kind
    copy = pickle.loads(pickle.dumps(kind))
    assert copy == kind and hash(copy) == hash(kind)
    with pytest.raises(TypeError):
        copy.peak_flops["float32"] = 1.0


def _all_reduce_ns(topology):
    with coopsim.RuntimeContext(topology, ccl={"model": "transfer"}) as ctx:
        def worker(rank, ctx):
            ctx.distributed.init_process_group("nccl")
            t = ctx.ones(1 << 12) * rank
            ctx.distributed.all_reduce(t)
            t.sum().item()
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=8)
        return ctx.sim.now_ns()


def test_c9_a_shared_topology_gives_the_times_of_a_fresh_one():
    """Routes cached by an earlier context change nothing for the next (pure memos)."""
    shared = [_all_reduce_ns("torus4x4") for _ in range(2)]
    fresh = _all_reduce_ns(load_file(configs_dir() / "torus4x4.yaml"))
    assert shared == [fresh, fresh] and fresh > 0
