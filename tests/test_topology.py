"""Tests of coopsim.topology: bundled configs, routes (C9) and every validation error."""

from __future__ import annotations

import copy
import itertools
import pickle
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from coopsim.topology import (
    DEFAULT_TOPOLOGY,
    Device,
    DeviceKind,
    Link,
    Topology,
    TopologyError,
    bundled_topologies,
    configs_dir,
    load_topology,
)
from coopsim.topology.schema import load_file

REQUIRED_BUNDLED = {"small", "ring8", "fully_connected8", "switch8", "torus4x4",
                    "dgx_a100", "dgx_h100", "cluster_2x8"}

GPU = {"memory_bytes": 1 << 30, "memory_bandwidth_GBps": 1000,
       "peak_flops": {"float32": 1e13}, "launch_overhead_ns": 4000}


def spec(n=4, links=None, **top):
    """A valid spec dict: ``n`` devices of kind ``gpu``, fully connected unless ``links``."""
    out = {"name": "t", "device_kinds": {"gpu": copy.deepcopy(GPU)},
           "devices": [{"kind": "gpu", "count": n}],
           "links": links if links is not None else
           [{"pattern": "fully_connected", "bandwidth_GBps": 50, "latency_ns": 700}]}
    out.update(top)
    return out


def write(tmp_path: Path, data, name="topo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def error_for(path: Path) -> TopologyError:
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    return info.value


def assert_error(path: Path, key_path: str, expected: str) -> str:
    """The message names the file, the key path and the expectation; return it."""
    err = error_for(path)
    msg = str(err)
    assert str(path) in msg and path.name in msg, msg
    assert msg.startswith(f"{path}: {key_path}: expected "), msg
    assert expected in msg.split(": expected ", 1)[1], msg
    assert err.key_path == key_path and err.file == str(path)
    return msg


def hops(topo: Topology, src: int, dst: int) -> int:
    return len(topo.route(src, dst))


def path_vertices(route) -> list[str]:
    return [route[0].src] + [link.dst for link in route]


# -- bundled configs --------------------------------------------------------------------------

def test_bundled_names_are_sorted_and_complete():
    names = bundled_topologies()
    assert names == sorted(names)
    assert REQUIRED_BUNDLED <= set(names)
    assert configs_dir() == Path(__file__).resolve().parent.parent / "coopsim" / "configs" / "topologies"


@pytest.mark.parametrize("name", sorted(REQUIRED_BUNDLED))
def test_bundled_config_loads_and_every_pair_has_a_route(name):
    topo = load_topology(name)
    assert topo.name == name
    assert topo.source == str(configs_dir() / f"{name}.yaml")
    assert [d.index for d in topo.devices] == list(range(topo.num_devices))
    assert [d.name for d in topo.devices] == [f"dev{i}" for i in range(topo.num_devices)]
    assert [link.index for link in topo.links] == list(range(len(topo.links)))
    for i, j in itertools.product(range(topo.num_devices), repeat=2):
        route = topo.route(i, j)
        if i == j:
            assert route == ()
            continue
        assert path_vertices(route)[0] == f"dev{i}" and path_vertices(route)[-1] == f"dev{j}"
        assert all(a.dst == b.src for a, b in zip(route, route[1:]))
    assert name in topo.describe()


def test_bundled_numbers_match_the_datasheets_and_stated_efficiency():
    a100 = load_topology("dgx_a100")
    kind = a100.device(0).kind
    assert kind.memory_bandwidth_GBps == 2039 and kind.peak_flops["float16"] == 312e12
    assert kind.peak_flops["float32"] == 19.5e12
    assert {link.bandwidth_GBps for link in a100.links} == {232.5}  # 12 x 25 GB/s x 0.775
    assert a100.protocols == "nccl" and a100.in_network_reduction == {}
    h100 = load_topology("dgx_h100")
    kind = h100.device(0).kind
    assert kind.memory_bandwidth_GBps == 3350 and kind.peak_flops["bfloat16"] == 989.4e12
    assert kind.peak_flops["float32"] == 67e12 and kind.memory_bytes == 80 * 2**30
    assert {link.bandwidth_GBps for link in h100.links} == {18 * 25 * 0.8}
    assert h100.protocols == "nccl" and h100.in_network_reduction["sw0"].efficiency == 0.85
    cluster = load_topology("cluster_2x8")
    assert cluster.num_devices == 16
    assert [d.node for d in cluster.devices] == [0] * 8 + [1] * 8
    nic_links = [lk for lk in cluster.links if "netsw" in (lk.src, lk.dst)]
    assert {lk.bandwidth_GBps for lk in nic_links} == {41.25}  # 50 GB/s x 0.825


def test_default_topology_is_small():
    topo = load_topology(None)
    assert DEFAULT_TOPOLOGY == "small" and topo.name == "small" and topo.num_devices == 4


def test_load_topology_accepts_topology_path_str_and_mapping(tmp_path):
    topo = load_topology("ring8")
    assert load_topology(topo) is topo
    path = write(tmp_path, spec(3), "three.yaml")
    assert load_topology(path).num_devices == 3
    assert load_topology(str(path)).source == str(path)
    assert load_topology(spec(5)).num_devices == 5


def test_name_defaults_to_the_file_stem(tmp_path):
    data = spec(2)
    del data["name"]
    assert load_topology(write(tmp_path, data, "my_rig.yaml")).name == "my_rig"


def test_unknown_bundled_name_lists_the_bundled_names():
    with pytest.raises(TopologyError) as info:
        load_topology("ring9")
    msg = str(info.value)
    assert msg.startswith("ring9: topology: expected one of the bundled topologies")
    assert all(name in msg for name in REQUIRED_BUNDLED)
    assert f"(in {configs_dir()})" in msg  # where they are, to copy one


def test_missing_file_names_the_path_and_lists_bundled_names(tmp_path):
    path = tmp_path / "nope.yaml"
    msg = str(error_for(path))
    assert msg.startswith(f"{path}: topology: expected an existing YAML file")
    assert "does not exist" in msg and "dgx_h100" in msg


def test_wrong_argument_type():
    with pytest.raises(TopologyError, match="expected None, a bundled topology name"):
        load_topology(42)


# -- model ------------------------------------------------------------------------------------

def test_model_types_and_units():
    topo = load_topology("switch8")
    link = topo.links[0]
    assert isinstance(link, Link) and link.bytes_per_ns == link.bandwidth_GBps == 100
    assert link.name == "dev0->sw0"
    device = topo.device(3)
    assert isinstance(device, Device) and isinstance(device.kind, DeviceKind)
    assert device.index == 3 and device.node == 0 and device.name == "dev3"
    assert hash(device) == hash(load_topology("switch8").device(3))
    assert topo.vertices == tuple(f"dev{i}" for i in range(8)) + ("sw0",)
    with pytest.raises(IndexError):
        topo.device(8)
    with pytest.raises(IndexError):
        topo.route(0, -1)


def test_describe_summarises_kinds_links_and_bandwidth():
    text = load_topology("cluster_2x8").describe()
    assert "cluster_2x8: 16 devices (16 x h100_sxm5_80gb) in 2 nodes" in text
    assert "96 directed links" in text
    assert "links[0].intra (switch): 32 links, 360 GB/s" in text
    assert "links[0].nic.network: 32 links, 41.25 GB/s" in text


def test_topology_error_is_a_value_error_and_pickles():
    err = TopologyError("f.yaml", "links[0].latency_ns", "a non-negative number", "-1 (int)")
    assert isinstance(err, ValueError)
    assert str(err) == "f.yaml: links[0].latency_ns: expected a non-negative number, got -1 (int)"
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


# -- routes -----------------------------------------------------------------------------------

def test_route_to_self_is_empty():
    for name in ("small", "ring8", "cluster_2x8"):
        topo = load_topology(name)
        assert all(topo.route(i, i) == () for i in range(topo.num_devices))


def test_ring_hops_unidirectional_and_bidirectional():
    uni = load_topology(spec(8, [{"pattern": "ring", "bidirectional": False,
                                  "bandwidth_GBps": 50, "latency_ns": 700}]))
    assert len(uni.links) == 8
    assert hops(uni, 0, 7) == 7 and hops(uni, 7, 0) == 1 and hops(uni, 0, 1) == 1
    bi = load_topology("ring8")
    assert len(bi.links) == 16
    assert hops(bi, 0, 7) == 1 and hops(bi, 0, 4) == 4 and hops(bi, 0, 3) == 3
    assert path_vertices(bi.route(0, 7)) == ["dev0", "dev7"]
    # ties (0 -> 4 both ways round) go to the smaller link indices: the forward links
    assert [lk.index for lk in bi.route(0, 4)] == [0, 1, 2, 3]


def test_ring_follows_the_listed_device_order():
    topo = load_topology(spec(4, [{"pattern": "ring", "bidirectional": False,
                                   "devices": [0, 2, 1, 3], "bandwidth_GBps": 1,
                                   "latency_ns": 1}]))
    assert path_vertices(topo.route(0, 3)) == ["dev0", "dev2", "dev1", "dev3"]


def test_fully_connected_is_one_hop():
    topo = load_topology("fully_connected8")
    assert len(topo.links) == 8 * 7
    assert all(hops(topo, i, j) == 1 for i in range(8) for j in range(8) if i != j)


def test_switch_is_two_hops_with_switch_latency_on_the_downlink():
    topo = load_topology("switch8")
    route = topo.route(2, 5)
    assert path_vertices(route) == ["dev2", "sw0", "dev5"]
    assert [lk.latency_ns for lk in route] == [300, 400]
    assert sum(lk.latency_ns for lk in route) == 700


def test_torus_corner_to_center_hop_counts():
    topo = load_topology("torus4x4")
    assert len(topo.links) == 64
    at = lambda r, c: 4 * r + c  # noqa: E731
    assert hops(topo, at(0, 0), at(2, 2)) == 4  # the centre: 2 + 2
    assert hops(topo, at(0, 0), at(1, 1)) == 2
    assert hops(topo, at(0, 0), at(3, 3)) == 2  # wrap-around in both dims
    assert hops(topo, at(0, 0), at(0, 3)) == 1
    assert hops(topo, at(1, 2), at(3, 0)) == 4
    assert max(hops(topo, 0, j) for j in range(16)) == 4


def test_torus_with_small_dims_has_no_duplicate_links():
    topo = load_topology(spec(4, [{"pattern": "torus2d", "dims": [2, 2],
                                   "bandwidth_GBps": 1, "latency_ns": 1}]))
    assert len(topo.links) == 8 and len({(lk.src, lk.dst) for lk in topo.links}) == 8
    line = load_topology(spec(3, [{"pattern": "torus2d", "dims": [1, 3],
                                   "bandwidth_GBps": 1, "latency_ns": 1}]))
    assert len(line.links) == 6


def test_hierarchical_intra_node_stays_inside_and_inter_node_uses_nics():
    topo = load_topology("cluster_2x8")
    assert path_vertices(topo.route(0, 7)) == ["dev0", "sw0", "dev7"]
    assert path_vertices(topo.route(9, 15)) == ["dev9", "sw1", "dev15"]
    route = topo.route(3, 12)
    assert path_vertices(route) == ["dev3", "nic3", "netsw", "nic12", "dev12"]
    assert sum(lk.latency_ns for lk in route) == 2000 + 2000 + 500
    assert min(lk.bandwidth_GBps for lk in route) == 41.25


def test_hierarchical_per_node_nic_never_turns_around():
    data = spec(8, [{"pattern": "hierarchical", "nodes": 2, "devices_per_node": 4,
                     "intra": {"pattern": "ring", "bandwidth_GBps": 100, "latency_ns": 700},
                     "nic": {"bandwidth_GBps": 25, "latency_ns": 2000, "per_device": False},
                     "network": {"switch_latency_ns": 100}}])
    topo = load_topology(data)
    assert [d.node for d in topo.devices] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert path_vertices(topo.route(0, 2)) == ["dev0", "dev1", "dev2"]
    assert path_vertices(topo.route(1, 6)) == ["dev1", "nic0.tx", "netsw", "nic1.rx", "dev6"]
    assert "nic0" not in topo.vertices and {"nic0.tx", "nic0.rx", "netsw"} <= set(topo.vertices)


def test_routes_prefer_fewer_hops_then_lower_latency():
    # 0 -> 2: a slow direct link (1 hop) beats a fast detour (2 hops); among the two-hop
    # routes 1 -> 3, the lower total latency wins even with larger link indices.
    links = [
        {"pattern": "ring", "bidirectional": False, "devices": [1, 0, 3],
         "bandwidth_GBps": 1, "latency_ns": 500},       # 1->0 0->3 3->1
        {"pattern": "ring", "bidirectional": False, "devices": [1, 2, 3],
         "bandwidth_GBps": 1, "latency_ns": 100},       # 1->2 2->3 3->1
        {"pattern": "fully_connected", "devices": [0, 2], "bandwidth_GBps": 1,
         "latency_ns": 9000},
    ]
    topo = load_topology(spec(4, links))
    assert path_vertices(topo.route(1, 3)) == ["dev1", "dev2", "dev3"]
    assert path_vertices(topo.route(0, 2)) == ["dev0", "dev2"]
    # parallel links from two patterns get distinct names
    assert {lk.name for lk in topo.links if (lk.src, lk.dst) == ("dev3", "dev1")} == {
        "dev3->dev1", "dev3->dev1#2"}


def test_c9_routes_are_deterministic():
    """Same spec -> same routes, whatever order the (lazily cached) routes are asked in."""
    for name in ("ring8", "torus4x4", "cluster_2x8"):  # two parses: load_topology shares one
        first, second = (load_file(configs_dir() / f"{name}.yaml") for _ in range(2))
        pairs = list(itertools.product(range(first.num_devices), repeat=2))
        forward = [tuple(lk.index for lk in first.route(i, j)) for i, j in pairs]
        backward = [tuple(lk.index for lk in second.route(i, j)) for i, j in reversed(pairs)]
        assert forward == backward[::-1]
        assert first.links == second.links
        assert first.route(0, 3) is first.route(0, 3)  # cached on the instance
    torus = load_topology("torus4x4")
    # (0,0) -> (1,1): four equal two-hop routes; the smallest link-index tuple wins
    assert [lk.index for lk in torus.route(0, 5)] == [0, 6]


def test_routes_are_fast_for_1024_devices():
    start = time.perf_counter()
    topo = load_topology(spec(1024, [{"pattern": "torus2d", "dims": [32, 32],
                                      "bandwidth_GBps": 1, "latency_ns": 1}]))
    assert max(hops(topo, 0, j) for j in range(1024)) == 32
    assert hops(topo, 517, 3) == len(topo.route(517, 3)) > 0
    assert time.perf_counter() - start < 2.0


def test_unreachable_device_is_an_error_naming_both(tmp_path):
    path = write(tmp_path, spec(3, [{"pattern": "fully_connected", "devices": [0, 1],
                                     "bandwidth_GBps": 1, "latency_ns": 1}]))
    msg = assert_error(path, "links", "every device to reach every other device")
    assert "no route from dev0 to dev2" in msg


def test_one_way_reachability_is_an_error_naming_both():
    kind = DeviceKind("g", 1, 1.0, {"float32": 1.0}, 0.0)
    with pytest.raises(TopologyError) as info:
        Topology("oneway", "<code>", [Device(0, kind, 0, "dev0"), Device(1, kind, 0, "dev1")],
                 [Link(0, "dev0", "dev1", 1.0, 0.0, "dev0->dev1")], ["dev0", "dev1"])
    assert str(info.value) == ("<code>: links: expected every device to reach every other "
                               "device, got no route from dev1 to dev0")


# -- validation errors: file + key path + expectation -----------------------------------------

def test_unknown_top_level_key(tmp_path):
    msg = assert_error(write(tmp_path, spec(links_extra=1)), "links_extra", "one of the keys")
    assert "'device_kinds'" in msg and "'links'" in msg


def test_unknown_nested_key_suggests_the_closest(tmp_path):
    data = spec(links=[{"pattern": "ring", "bandwith_GBps": 1, "latency_ns": 1}])
    msg = assert_error(write(tmp_path, data), "links[0].bandwith_GBps", "one of the keys")
    assert "'bidirectional'" in msg and "did you mean 'bandwidth_GBps'?" in msg


def test_unknown_device_kind_key(tmp_path):
    data = spec()
    data["device_kinds"]["gpu"]["hbm_GBps"] = 1
    assert_error(write(tmp_path, data), "device_kinds.gpu.hbm_GBps", "one of the keys")


def test_missing_required_key(tmp_path):
    data = spec(links=[{"pattern": "switch", "bandwidth_GBps": 1}])
    msg = assert_error(write(tmp_path, data), "links[0].latency_ns",
                       "the required key 'latency_ns'")
    assert "present: ['bandwidth_GBps', 'pattern']" in msg


def test_missing_top_level_section(tmp_path):
    data = spec()
    del data["devices"]
    assert_error(write(tmp_path, data), "devices", "the required key 'devices'")


def test_missing_pattern_key(tmp_path):
    data = spec(links=[{"bandwidth_GBps": 1, "latency_ns": 1}])
    assert_error(write(tmp_path, data), "links[0].pattern", "the required key 'pattern'")


def test_bool_is_not_a_number(tmp_path):
    data = spec(links=[{"pattern": "ring", "bandwidth_GBps": True, "latency_ns": 1}])
    msg = assert_error(write(tmp_path, data), "links[0].bandwidth_GBps", "a positive number")
    assert msg.endswith("got True (bool)")


def test_string_is_not_a_number(tmp_path):
    data = spec()
    data["device_kinds"]["gpu"]["peak_flops"]["float32"] = "fast"
    assert_error(write(tmp_path, data), "device_kinds.gpu.peak_flops.float32", "a positive number")


def test_quoted_number_is_a_string(tmp_path):
    data = spec(links=[{"pattern": "ring", "bandwidth_GBps": "50", "latency_ns": 1}])
    msg = assert_error(write(tmp_path, data), "links[0].bandwidth_GBps", "a positive number")
    assert msg.endswith("got '50' (str)")


def test_non_bool_flag(tmp_path):
    data = spec(links=[{"pattern": "ring", "bidirectional": 1, "bandwidth_GBps": 1,
                        "latency_ns": 1}])
    assert_error(write(tmp_path, data), "links[0].bidirectional", "true or false")


def test_fractional_count(tmp_path):
    data = spec()
    data["devices"][0]["count"] = 2.5
    assert_error(write(tmp_path, data), "devices[0].count", "a positive integer")


def test_zero_bandwidth(tmp_path):
    data = spec(links=[{"pattern": "fully_connected", "bandwidth_GBps": 0, "latency_ns": 1}])
    assert_error(write(tmp_path, data), "links[0].bandwidth_GBps", "a positive number")


def test_negative_bandwidth(tmp_path):
    data = spec()
    data["device_kinds"]["gpu"]["memory_bandwidth_GBps"] = -5
    assert_error(write(tmp_path, data), "device_kinds.gpu.memory_bandwidth_GBps",
                 "a positive number")


def test_negative_latency(tmp_path):
    data = spec(links=[{"pattern": "switch", "bandwidth_GBps": 1, "latency_ns": 1,
                        "switch_latency_ns": -1}])
    assert_error(write(tmp_path, data), "links[0].switch_latency_ns", "a non-negative number")


def test_non_positive_count(tmp_path):
    data = spec()
    data["devices"][0]["count"] = 0
    assert_error(write(tmp_path, data), "devices[0].count", "a positive integer")


def test_non_positive_nodes(tmp_path):
    data = spec(4, [{"pattern": "hierarchical", "nodes": 0, "devices_per_node": 4,
                     "intra": {"pattern": "ring", "bandwidth_GBps": 1, "latency_ns": 1},
                     "nic": {"bandwidth_GBps": 1, "latency_ns": 1}}])
    assert_error(write(tmp_path, data), "links[0].nodes", "a positive integer")


def test_unknown_device_kind_referenced(tmp_path):
    data = spec()
    data["devices"].append({"kind": "h100", "count": 2})
    msg = assert_error(write(tmp_path, data), "devices[1].kind", "one of the device kinds ['gpu']")
    assert "got 'h100'" in msg


def test_unknown_pattern(tmp_path):
    data = spec(links=[{"pattern": "mesh", "bandwidth_GBps": 1, "latency_ns": 1}])
    msg = assert_error(write(tmp_path, data), "links[0].pattern", "one of the patterns")
    assert "'torus2d'" in msg and "got 'mesh'" in msg


def test_torus_dims_must_match_device_count(tmp_path):
    data = spec(16, [{"pattern": "torus2d", "dims": [3, 4], "bandwidth_GBps": 1,
                      "latency_ns": 1}])
    msg = assert_error(write(tmp_path, data), "links[0].dims", "rows * cols == 16")
    assert "got 3 * 4 = 12" in msg


def test_device_index_out_of_range(tmp_path):
    data = spec(4, [{"pattern": "ring", "devices": [0, 1, 4], "bandwidth_GBps": 1,
                     "latency_ns": 1}])
    assert_error(write(tmp_path, data), "links[0].devices[2]", "a device index in 0..3")


def test_duplicate_device_index(tmp_path):
    data = spec(4, [{"pattern": "ring", "devices": [0, 1, 0], "bandwidth_GBps": 1,
                     "latency_ns": 1}])
    assert_error(write(tmp_path, data), "links[0].devices[2]", "distinct device indices")


def test_unknown_dtype_in_peak_flops(tmp_path):
    data = spec()
    data["device_kinds"]["gpu"]["peak_flops"]["fp16"] = 1e12
    msg = assert_error(write(tmp_path, data), "device_kinds.gpu.peak_flops.fp16",
                       "one of the keys ['bfloat16', 'float16', 'float32', 'float64', 'int32', 'int64']")
    assert "did you mean 'float16'?" in msg


def test_hierarchical_must_cover_all_devices(tmp_path):
    data = spec(6, [{"pattern": "hierarchical", "nodes": 2, "devices_per_node": 4,
                     "intra": {"pattern": "ring", "bandwidth_GBps": 1, "latency_ns": 1},
                     "nic": {"bandwidth_GBps": 1, "latency_ns": 1}}])
    msg = assert_error(write(tmp_path, data), "links[0]", "nodes * devices_per_node == 6")
    assert "got 2 * 4 = 8" in msg


def test_hierarchical_intra_rejects_nesting_and_subsets(tmp_path):
    inner = {"pattern": "hierarchical"}
    data = spec(4, [{"pattern": "hierarchical", "nodes": 2, "devices_per_node": 2,
                     "intra": inner, "nic": {"bandwidth_GBps": 1, "latency_ns": 1}}])
    assert_error(write(tmp_path, data), "links[0].intra.pattern", "one of the patterns")
    data["links"][0]["intra"] = {"pattern": "ring", "devices": [0], "bandwidth_GBps": 1,
                                 "latency_ns": 1}
    assert_error(write(tmp_path, data), "links[0].intra.devices", "one of the keys")


def test_only_one_hierarchical(tmp_path):
    entry = {"pattern": "hierarchical", "nodes": 2, "devices_per_node": 2,
             "intra": {"pattern": "ring", "bandwidth_GBps": 1, "latency_ns": 1},
             "nic": {"bandwidth_GBps": 1, "latency_ns": 1}}
    data = spec(4, [entry, entry])
    assert_error(write(tmp_path, data), "links[1].pattern", "at most one 'hierarchical'")


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "name: x\ndevices: [\n  {kind: gpu, count: 2\nlinks: []\n")
    err = error_for(path)
    assert str(err).startswith(f"{path}: line ")
    assert "expected valid YAML" in str(err)


def test_duplicate_yaml_key_names_the_line(tmp_path):
    text = yaml.safe_dump(spec(2), sort_keys=False) + "devices: [{kind: gpu, count: 3}]\n"
    path = write(tmp_path, text)
    msg = str(error_for(path))
    line = text.splitlines().index("devices: [{kind: gpu, count: 3}]") + 1
    assert msg.startswith(f"{path}: line {line}, column 1: expected valid YAML")
    assert "duplicate key 'devices'" in msg


def test_empty_file_is_not_a_mapping(tmp_path):
    assert_error(write(tmp_path, ""), "(top level)", "a mapping with the keys")


def test_yaml11_exponent_numbers_are_floats(tmp_path):
    # PyYAML (YAML 1.1) reads 1e12 and 19.5e12 as strings; the topology loader reads floats.
    assert isinstance(yaml.safe_load("x: 19.5e12")["x"], str)
    text = textwrap.dedent("""\
        name: exp
        device_kinds:
          gpu:
            memory_bytes: 80e9
            memory_bandwidth_GBps: 2.039e3
            peak_flops: {float32: 19.5e12, float16: 1e12, bfloat16: +3E+14, int32: 1_000}
            launch_overhead_ns: 4e3
        devices: [{kind: gpu, count: 2}]
        links: [{pattern: ring, bandwidth_GBps: 5e1, latency_ns: .7e3}]
        """)
    topo = load_topology(write(tmp_path, text))
    kind = topo.device(0).kind
    assert kind.memory_bytes == 80_000_000_000 and isinstance(kind.memory_bytes, int)
    assert kind.peak_flops == {"float32": 19.5e12, "float16": 1e12, "bfloat16": 3e14,
                               "int32": 1000.0}
    assert kind.memory_bandwidth_GBps == 2039.0 and kind.launch_overhead_ns == 4000.0
    assert topo.links[0].bandwidth_GBps == 50.0 and topo.links[0].latency_ns == 700.0
