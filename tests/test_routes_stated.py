"""Routes a pattern states (coopsim/topology/stated.py) are exactly the routes the graph search
finds (the routing contract, C9), for every pair of every bundled topology and of generated
topologies of every pattern, with sizes and latencies chosen to hit the ties and the in-node
versus network choice of hierarchical nodes; and route classes group only equal routes."""

import itertools

import pytest

from coopsim.topology import bundled_topologies, load_topology, parse_topology

KIND = {"gpu": {"memory_bytes": 1 << 30, "memory_bandwidth_GBps": 100,
                "peak_flops": {"float32": 1e12}, "launch_overhead_ns": 0}}


def _topology(n: int, entry: dict):
    return parse_topology({"name": "gen", "device_kinds": KIND,
                           "devices": [{"kind": "gpu", "count": n}], "links": [entry]})


def _link(**more):
    return {"bandwidth_GBps": 10, "latency_ns": 100, **more}


def _generated():
    for n in range(1, 8):
        yield n, {"pattern": "ring", "bidirectional": True, **_link()}
        yield n, {"pattern": "ring", "bidirectional": False, **_link()}
        yield n, {"pattern": "switch", "switch_latency_ns": 50, **_link()}
        yield n, {"pattern": "fully_connected", **_link()}
    for rows, cols in [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 2), (1, 5), (5, 1), (3, 4),
                       (4, 4), (4, 5)]:
        yield rows * cols, {"pattern": "torus2d", "dims": [rows, cols], **_link()}
    yield 6, {"pattern": "ring", "devices": [3, 1, 5, 0, 2, 4], **_link()}  # a permutation
    yield 6, {"pattern": "torus2d", "dims": [2, 3], "devices": [5, 4, 3, 2, 1, 0], **_link()}
    intras = [{"pattern": "ring", **_link()}, {"pattern": "ring", **_link(latency_ns=10)},
              {"pattern": "ring", "bidirectional": False, **_link(latency_ns=500)},
              {"pattern": "switch", "switch_latency_ns": 20, **_link()},
              {"pattern": "fully_connected", **_link()},
              {"pattern": "torus2d", "dims": [3, 3], **_link(latency_ns=10)},
              {"pattern": "torus2d", "dims": [1, 9], **_link(latency_ns=250)}]
    for intra, per_device, nodes in itertools.product(intras, (True, False), (1, 3)):
        per_node = 9 if intra["pattern"] == "torus2d" else 8 if intra["pattern"] == "ring" else 4
        # nic path: 2 * 100 + 300 = 500 ns; a 4-link ring path: 40, 400 or 2000 ns
        yield nodes * per_node, {
            "pattern": "hierarchical", "nodes": nodes, "devices_per_node": per_node,
            "intra": intra, "nic": {"bandwidth_GBps": 5, "latency_ns": 100, "per_device": per_device},
            "network": {"switch_latency_ns": 300}}


def _check_every_pair(t) -> None:
    classes: dict = {}
    for a, b in itertools.product(range(t.num_devices), repeat=2):
        route = t.route(a, b)
        assert route == t.searched_route(a, b), (t.name, a, b)
        shape = tuple((link.latency_ns, link.bandwidth_GBps) for link in route)
        assert classes.setdefault(t.route_class(a, b), shape) == shape, (t.name, a, b)
    if t.one_route_class:  # the planner then costs one pair for all (ADR-0036)
        assert len(set(classes) - {None}) <= 1, t.name


@pytest.mark.parametrize("name", bundled_topologies())
def test_c9_stated_routes_equal_the_search_on_bundled_topologies(name):
    t = load_topology(name)
    assert t.stated is not None  # every bundled topology is one pattern
    _check_every_pair(t)


@pytest.mark.parametrize("n, entry", list(_generated()), ids=lambda v: str(v)[:40])
def test_c9_stated_routes_equal_the_search_on_generated_topologies(n, entry):
    t = _topology(n, entry)
    assert t.stated is not None
    _check_every_pair(t)


def test_hierarchical_nodes_choose_the_network_when_it_is_shorter_or_faster():
    """Ring of 8 per node: 4 hops apart, the ring wins at 4 x 10 ns against the network's
    200 ns, the network against 4 x 500 ns; fewer hops than 4 always stay in the node."""
    for ring_ns, via_network in ((10, False), (500, True)):
        t = _topology(16, {"pattern": "hierarchical", "nodes": 2, "devices_per_node": 8,
                           "intra": {"pattern": "ring", **_link(latency_ns=ring_ns)},
                           "nic": {"bandwidth_GBps": 5, "latency_ns": 100}})
        assert ("netsw" in {link.dst for link in t.route(0, 4)}) is via_network
        assert len(t.route(0, 3)) == 3 and len(t.route(0, 8)) == 4  # 3 in-node hops; two nodes


def test_a_pattern_over_some_devices_or_several_patterns_states_nothing():
    two = parse_topology({"name": "two", "device_kinds": KIND, "devices": [{"kind": "gpu", "count": 4}],
                          "links": [{"pattern": "ring", **_link()},
                                    {"pattern": "switch", "devices": [0, 2], **_link()}]})
    assert two.stated is None
    assert two.route(0, 2) == two.searched_route(0, 2)
    assert two.route_class(0, 2) == (0, 2) and two.route_class(1, 1) is None
