"""A switch's links are one run of the link table, made when read (coopsim/topology/linktable.py,
docs/adr/0036-spawn-and-setup-at-scale.md): the records must be exactly the ones laid one by
one, and the constructor's checks must still catch a bad link."""

import pytest

from coopsim.topology import TopologyError, load_topology
from coopsim.topology.linktable import LinkTable, SwitchRun
from coopsim.topology.model import Device, DeviceKind, Link, Topology
from coopsim.topology.schema import parse_topology


def _fields(link):
    return (link.index, link.src, link.dst, link.bandwidth_GBps, link.latency_ns, link.name, link.origin)


def test_switch_links_are_the_documented_ones_in_order():
    links = load_topology("switch8").links
    assert len(links) == 16 and links.runs and not list(links.explicit())
    expected = []
    for d in range(8):  # per device its up-link, then its down-link (the switch's latency on it)
        expected.append((2 * d, f"dev{d}", "sw0", 100.0, 300.0, f"dev{d}->sw0", "links[0] (switch)"))
        expected.append((2 * d + 1, "sw0", f"dev{d}", 100.0, 400.0, f"sw0->dev{d}", "links[0] (switch)"))
    assert [_fields(lk) for lk in links] == expected
    assert links[-1] is links[15] is list(links)[15]  # made once, then kept
    assert links[3:5] == (links[3], links[4])
    with pytest.raises(IndexError):
        links[16]


@pytest.mark.parametrize("name", ["dgx_h100", "cluster_2x8", "small"])
def test_a_table_with_runs_equals_its_links_laid_as_records(name):
    topo = load_topology(name)
    records = LinkTable(Link(*_fields(lk)) for lk in topo.links)  # every link an explicit record
    assert topo.links == records and topo.links == tuple(records)
    assert [_fields(lk) for lk in topo.links] == [_fields(lk) for lk in records]
    assert [i for i, _ in topo.links.explicit()] == sorted(
        set(range(len(topo.links))) - {first + k for first, run in topo.links.runs for k in range(len(run))})


def test_hierarchical_nodes_of_switches_keep_their_link_order():
    spec = {"name": "h", "device_kinds": {"gpu": {"memory_bytes": 1 << 30, "memory_bandwidth_GBps": 100,
            "peak_flops": {"float32": 1e12}, "launch_overhead_ns": 0}},
            "devices": [{"kind": "gpu", "count": 4}],
            "links": [{"pattern": "hierarchical", "nodes": 2, "devices_per_node": 2,
                       "intra": {"pattern": "switch", "bandwidth_GBps": 10, "latency_ns": 5},
                       "nic": {"bandwidth_GBps": 1, "latency_ns": 50}}]}
    links = parse_topology(spec, "<test>").links
    assert [lk.index for lk in links] == list(range(len(links)))
    assert [(lk.src, lk.dst) for lk in links[:8]] == [
        ("dev0", "sw0"), ("sw0", "dev0"), ("dev1", "sw0"), ("sw0", "dev1"),
        ("dev2", "sw1"), ("sw1", "dev2"), ("dev3", "sw1"), ("sw1", "dev3")]
    assert links[8].src == "dev0" and "nic" in links[8].dst  # the NICs' links come after, as records


def test_a_bad_run_is_refused_naming_its_first_bad_link():
    kind = DeviceKind("gpu", 1 << 30, 100.0, {"float32": 1e12}, 0.0)
    devices = [Device(0, kind, 0, "dev0"), Device(1, kind, 0, "dev1")]
    table = LinkTable()
    table.add_run(SwitchRun(["dev0", "dev1"], "sw9", 10.0, 1.0, 1.0, "test"))  # sw9 is no vertex
    with pytest.raises(TopologyError, match=r"links\[0\]\.dst.*'sw9'"):
        Topology("t", "<test>", devices, table, ["dev0", "dev1", "sw0"])
    table = LinkTable()
    table.add_run(SwitchRun(["dev0", "dev1"], "sw0", 10.0, 1.0, -1.0, "test"))  # a negative down latency
    with pytest.raises(TopologyError, match=r"links\[1\]\.latency_ns"):
        Topology("t", "<test>", devices, table, ["dev0", "dev1", "sw0"])


def test_a_topologys_link_table_takes_no_more_links():
    links = load_topology("switch8").links
    with pytest.raises(TypeError, match="cannot change"):
        links.append(links[0])
    with pytest.raises(TypeError, match="cannot change"):
        links.add_run(SwitchRun(["dev0"], "sw1", 1.0, 1.0, 1.0, "x"))


def test_reading_every_link_makes_each_record_once():
    topo = parse_topology({"name": "s", "device_kinds": {"gpu": {"memory_bytes": 1 << 30,
                           "memory_bandwidth_GBps": 100, "peak_flops": {"float32": 1e12},
                           "launch_overhead_ns": 0}}, "devices": [{"kind": "gpu", "count": 3}],
                           "links": [{"pattern": "switch", "bandwidth_GBps": 10, "latency_ns": 5}]}, "<test>")
    middle = topo.links[2]
    every = list(topo.links)
    assert every[2] is middle and [lk.index for lk in every] == list(range(6))
    assert all(a is b for a, b in zip(every, topo.links))
