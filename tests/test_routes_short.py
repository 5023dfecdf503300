"""Short routes (up to four links) are found by meeting in the middle instead of a whole route
tree; they must be exactly the tree's routes (the routing contract, C9)."""

import random

import pytest

from coopsim.topology import bundled_topologies, load_topology, parse_topology
from coopsim.topology.model import _short_path
from coopsim.topology.routes import NO_LINK, shortest_path_tree


def _tree_route(t, tree, b):
    path, v = [], t._vertex_index[t.devices[b].name]
    while tree[v] != NO_LINK:
        path.append(tree[v])
        v = t._vertex_index[t.links[tree[v]].src]
    return tuple(reversed(path))


def _check_every_pair(t) -> int:
    found = 0
    out, into = t._adjacency()
    for a in range(t.num_devices):
        tree = shortest_path_tree(out, t._vertex_index[t.devices[a].name])
        for b in range(t.num_devices):
            if a == b:
                continue
            s, d = (t._vertex_index[t.devices[x].name] for x in (a, b))
            short = _short_path(out, into, s, d)
            want = _tree_route(t, tree, b)
            if short is not None:
                assert short == want, (t.name, a, b, short, want)
                found += 1
            assert tuple(link.index for link in t.route(a, b)) == want
    return found


@pytest.mark.parametrize("name", bundled_topologies())
def test_c9_short_routes_equal_the_route_tree_on_bundled_topologies(name):
    assert _check_every_pair(load_topology(name)) > 0


def _random_topology(seed: int):
    """A ring over every device (strongly connected) plus patterns over random subsets with a
    few latencies (many ties, parallel links, one-way rings)."""
    rng = random.Random(seed)
    n = rng.randint(3, 9)
    links = [{"pattern": "ring", "bandwidth_GBps": 10, "latency_ns": rng.choice([0, 100, 300]),
              "bidirectional": rng.random() < 0.5}]
    for _ in range(rng.randint(0, 3)):
        subset = sorted(rng.sample(range(n), rng.randint(2, n)))
        kind = rng.choice(["ring", "switch", "fully_connected"])
        entry = {"pattern": kind, "bandwidth_GBps": 5, "latency_ns": rng.choice([0, 100, 200]),
                 "devices": subset}
        if kind == "ring":
            entry["bidirectional"] = rng.random() < 0.5
        if kind == "switch":
            entry["switch_latency_ns"] = rng.choice([0, 50])
        links.append(entry)
    return parse_topology({
        "name": f"random{seed}",
        "device_kinds": {"gpu": {"memory_bytes": 1 << 30, "memory_bandwidth_GBps": 100,
                                 "peak_flops": {"float32": 1e12}, "launch_overhead_ns": 0}},
        "devices": [{"kind": "gpu", "count": n}],
        "links": links,
    })


@pytest.mark.parametrize("seed", range(40))
def test_c9_short_routes_equal_the_route_tree_on_random_graphs(seed):
    _check_every_pair(_random_topology(seed))
