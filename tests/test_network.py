"""The link contention model (ADR-0004): latency, then bandwidth shared max-min fairly (ADR-0022).

Times below are hand calculations with values that are exact in binary, so the assertions
are bit-for-bit; elsewhere ``pytest.approx(rel=1e-12)``.
"""

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coopsim.engine import Engine, Network, Transfer
from coopsim.topology import load_topology


@dataclass(frozen=True)
class L:
    """A stand-in for ``coopsim.topology.Link`` with the same fields."""

    index: int
    src: str
    dst: str
    bandwidth_GBps: float
    latency_ns: float
    name: str = ""


def chain(*specs):
    """Links a->b->c...: each spec is (bandwidth_GBps, latency_ns)."""
    return tuple(L(i, f"v{i}", f"v{i + 1}", bw, lat) for i, (bw, lat) in enumerate(specs))


def run(engine):
    while engine.step_instant():
        pass


def make():
    engine = Engine()
    return engine, Network(engine)


def start_at(engine, at_ns, fn):
    """Call ``fn()`` at virtual time ``at_ns`` (from an engine callback, as the runtime would)."""
    engine.timer(at_ns - engine.now_ns).add_callback(lambda _h: fn())


# -- one transfer ---------------------------------------------------------------------------


def test_single_transfer_takes_latency_plus_bytes_over_bandwidth():
    engine, net = make()
    (link,) = chain((4.0, 10.0))
    h = net.transfer((link,), 1024, "a")
    assert not h.done
    run(engine)
    assert h.done and h.time_ns == 10.0 + 1024 / 4.0 == 266.0
    assert net.link_bytes(link) == 1024
    assert net.link_busy_ns(link) == 256.0
    assert net.active() == []


def test_single_transfer_is_exact_for_inexact_values():
    engine, net = make()
    route = chain((46.7, 123.4), (19.3, 0.7))
    done = []
    start_at(engine, 1000.1, lambda: done.append(net.transfer(route, 123_457, "a")))
    run(engine)
    # start + L + B / W, evaluated left to right, with L summed over the route from 0
    assert done[0].time_ns == 1000.1 + (0 + 123.4 + 0.7) + 123_457 / 19.3
    assert done[0].time_ns == pytest.approx(1000.1 + 124.1 + 123_457 / 19.3, rel=1e-12)


def test_uncontended_transfer_uses_two_engine_steps():
    engine, net = make()
    net.transfer(chain((8.0, 0.0)), 64, "a")
    run(engine)
    assert engine.steps == 2  # start streaming at 0, finish at 8: no extra epsilon event


def test_three_hop_route_is_limited_by_its_slowest_link():
    engine, net = make()
    route = chain((100.0, 5.0), (25.0, 7.0), (50.0, 11.0))
    h = net.transfer(route, 1000, "3 hops")
    run(engine)
    assert h.time_ns == 5.0 + 7.0 + 11.0 + 1000 / 25.0 == 63.0
    assert [net.link_bytes(link) for link in route] == [1000, 1000, 1000]


# -- contention -----------------------------------------------------------------------------


def test_two_transfers_sharing_a_link_take_twice_as_long():
    engine, net = make()
    route = chain((4.0, 10.0))
    a = net.transfer(route, 1024, "a")
    b = net.transfer(route, 1024, "b")
    order = []
    a.add_callback(lambda h: order.append("a"))
    b.add_callback(lambda h: order.append("b"))
    run(engine)
    assert a.time_ns == b.time_ns == 10.0 + 2 * 1024 / 4.0
    assert order == ["a", "b"]  # ties complete in creation order
    assert net.link_bytes(route[0]) == 2048
    assert net.link_busy_ns(route[0]) == 512.0


def test_transfers_on_disjoint_links_do_not_interact():
    engine, net = make()
    r1, r2 = chain((4.0, 10.0)), (L(7, "x", "y", 2.0, 3.0),)
    a = net.transfer(r1, 1024, "a")
    done = []
    start_at(engine, 100.0, lambda: done.append(net.transfer(r2, 512, "b")))
    run(engine)
    assert a.time_ns == 10.0 + 1024 / 4.0
    assert done[0].time_ns == 100.0 + 3.0 + 512 / 2.0


def test_transfer_speeds_back_up_when_the_other_ends():
    """T1 alone at 4 B/ns from 10; T2 joins at 138 (start 128 + latency 10) when T1 has
    512 B left. Both at 2 B/ns: T1 ends at 138 + 512/2 = 394, when T2 has 1024 - 2*256 = 512 B
    left; alone again at 4 B/ns, T2 ends at 394 + 512/4 = 522."""
    engine, net = make()
    route = chain((4.0, 10.0))
    t1 = net.transfer(route, 1024, "t1")
    late = []
    start_at(engine, 128.0, lambda: late.append(net.transfer(route, 1024, "t2")))
    seen = {}

    def snapshot():
        seen.update({t.desc: (t.state, t.rate, t.remaining_bytes) for t in net.active()})

    start_at(engine, 200.0, snapshot)
    run(engine)
    assert t1.time_ns == 394.0
    assert late[0].time_ns == 522.0
    # at 200: T1 has 512 - 2*62 = 388 B left, T2 1024 - 2*62 = 900 B
    assert seen == {"t1": ("streaming", 2.0, 388.0), "t2": ("streaming", 2.0, 900.0)}
    assert net.link_busy_ns(route[0]) == 512.0


def test_max_min_gives_a_link_s_unused_share_to_the_others():
    """ADR-0022: T1 crosses A and B, bottlenecked on A which it shares with T3 (5 B/ns each);
    T2 alone on the rest of B gets what T1 leaves of it: 95, not the equal share 50."""
    engine, net = make()
    a, b = L(0, "x", "y", 10.0, 0.0), L(1, "y", "z", 100.0, 0.0)
    t1 = net.transfer((a, b), 1000, "t1")
    t2 = net.transfer((b,), 950, "t2")
    t3 = net.transfer((a,), 1000, "t3")
    rates = []
    start_at(engine, 1.0, lambda: rates.extend((t.desc, t.rate) for t in net.active()))
    run(engine)
    assert rates == [("t1", 5.0), ("t2", 95.0), ("t3", 5.0)]
    assert t2.time_ns == 950 / 95.0
    assert t1.time_ns == t3.time_ns == 2000 / 10.0


def test_max_min_four_flow_case():
    """The issue's case: F1, F2, F3 share link A (1/3 each); F3 and F4 share link B. Equal
    share would give F4 half of B (2.0 ns per byte: +33 %); max-min gives it the 2/3 that F3
    leaves, so F4's 1536 bytes take 1536 / (2/3) = 2304 ns."""
    engine, net = make()
    a, b = L(0, "x", "y", 1.0, 0.0), L(1, "y", "z", 1.0, 0.0)
    f1 = net.transfer((a,), 1536, "f1")
    f2 = net.transfer((a,), 1536, "f2")
    f3 = net.transfer((a, b), 1536, "f3")
    f4 = net.transfer((b,), 1536, "f4")
    rates = []
    start_at(engine, 1.0, lambda: rates.extend((t.desc, t.rate) for t in net.active()))
    run(engine)
    assert [r for _, r in rates] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 2 / 3], rel=1e-15)
    assert f4.time_ns == pytest.approx(1536 / (2 / 3), rel=1e-12)
    assert f1.time_ns == f2.time_ns == f3.time_ns == pytest.approx(3 * 1536, rel=1e-12)


def test_max_min_never_oversubscribes_a_link_and_fills_every_bottleneck():
    """Three levels of bottleneck: every link's rates sum to at most its bandwidth, and every
    flow crosses a link that is full (the max-min optimality condition)."""
    engine, net = make()
    a, b, c = L(0, "x", "y", 3.0, 0.0), L(1, "y", "z", 8.0, 0.0), L(2, "z", "w", 20.0, 0.0)
    routes = [(a,), (a, b), (a, b, c), (b,), (b, c), (c,)]
    for i, route in enumerate(routes):
        net.transfer(route, 10_000, f"t{i}")
    seen = []
    start_at(engine, 1.0, lambda: seen.extend(net.active()))
    run(engine)
    load = {link.index: sum(t.rate for t in seen if link in t.route) for link in (a, b, c)}
    assert all(load[link.index] <= link.bandwidth_GBps * (1 + 1e-12) for link in (a, b, c))
    for t in seen:
        assert any(load[link.index] == pytest.approx(link.bandwidth_GBps) and
                   t.rate == pytest.approx(max(u.rate for u in seen if link in u.route))
                   for link in t.route)
    assert [t.rate for t in seen] == pytest.approx([1, 1, 1, 3, 3, 16])  # c: 20 - 1 - 3


def test_a_new_short_transfer_supersedes_a_later_wake_up():
    engine, net = make()
    slow = net.transfer(chain((1.0, 0.0)), 1000, "slow")
    fast = []
    start_at(engine, 10.0, lambda: fast.append(
        net.transfer((L(5, "p", "q", 8.0, 2.0),), 8, "fast")))
    run(engine)
    assert fast[0].time_ns == 13.0
    assert slow.time_ns == 1000.0


# -- degenerate transfers -------------------------------------------------------------------


def test_zero_bytes_takes_the_route_latency_only():
    engine, net = make()
    route = chain((4.0, 10.0), (2.0, 5.5))
    h = net.transfer(route, 0, "empty")
    assert not h.done
    assert [t.state for t in net.active()] == ["latency"]
    run(engine)
    assert h.time_ns == 15.5
    assert net.link_busy_ns(route[0]) == 0.0


def test_empty_route_completes_at_once_but_not_synchronously():
    engine, net = make()
    start_at(engine, 7.0, lambda: None)
    run(engine)
    steps = engine.steps
    h = net.transfer((), 1 << 20, "to myself")
    assert not h.done
    run(engine)
    assert h.time_ns == 7.0
    assert engine.steps == steps + 1


def test_on_done_runs_before_other_callbacks():
    engine, net = make()
    calls = []
    h = net.transfer(chain((1.0, 1.0)), 4, "x", on_done=lambda hd: calls.append(("on_done", hd)))
    h.add_callback(lambda hd: calls.append(("later", hd)))
    run(engine)
    assert calls == [("on_done", h), ("later", h)]


def test_a_transfer_started_from_a_completion_callback_starts_at_that_instant():
    engine, net = make()
    route = chain((2.0, 1.0))
    second = []
    net.transfer(route, 8, "first",
                 on_done=lambda h: second.append(net.transfer(route, 8, "second")))
    run(engine)
    assert second[0].time_ns == (1.0 + 4.0) + 1.0 + 4.0


def test_active_lists_transfers_in_creation_order_with_their_fields():
    engine, net = make()
    r_long, r_short = chain((1.0, 50.0)), (L(3, "a", "b", 1.0, 0.0),)
    net.transfer(r_long, 10, "long latency")
    net.transfer(r_short, 10, "streams first")
    engine.step_instant()  # t = 0: the second starts streaming
    active = net.active()
    assert [t.desc for t in active] == ["long latency", "streams first"]
    assert all(isinstance(t, Transfer) for t in active)
    first, second = active
    assert (first.route, first.nbytes, first.start_ns, first.state) == (r_long, 10, 0.0, "latency")
    assert (second.state, second.rate, second.remaining_bytes) == ("streaming", 1.0, 10.0)
    usage = net.link_usage()
    assert [(u.link, u.streaming) for u in usage] == [(r_long[0], 0), (r_short[0], 1)]


# -- argument errors ------------------------------------------------------------------------


@pytest.mark.parametrize("nbytes", [-1, 1.5, 8.0, True, "8", None])
def test_bad_nbytes_is_a_value_error_naming_it(nbytes):
    _, net = make()
    with pytest.raises(ValueError, match="nbytes"):
        net.transfer(chain((1.0, 0.0)), nbytes, "x")


@pytest.mark.parametrize("route", [
    [L(0, "a", "b", 1.0, 0.0)],          # a list
    (L(0, "a", "b", 1.0, 0.0), "b->c"),  # not a link
    None,
])
def test_a_route_that_is_not_a_tuple_of_links_is_a_value_error(route):
    _, net = make()
    with pytest.raises(ValueError, match="route"):
        net.transfer(route, 8, "x")


def test_a_broken_route_is_a_value_error():
    _, net = make()
    a, b = L(0, "a", "b", 1.0, 0.0), L(1, "c", "d", 1.0, 0.0)
    with pytest.raises(ValueError, match="not contiguous"):
        net.transfer((a, b), 8, "x")
    back = L(1, "b", "a", 1.0, 0.0)
    with pytest.raises(ValueError, match="twice"):
        net.transfer((a, back, a), 8, "x")
    net.transfer((a,), 8, "ok")
    with pytest.raises(ValueError, match="one topology"):
        net.transfer((L(0, "x", "y", 2.0, 0.0),), 8, "other topology")
    assert [t.desc for t in net.active()] == ["ok"]


# -- bundled topologies ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ring8", "switch8", "fully_connected8"])
def test_one_transfer_on_a_bundled_topology(name):
    topo = load_topology(name)
    engine, net = make()
    route = topo.route(0, 3)
    h = net.transfer(route, 1 << 20, "0->3")
    run(engine)
    latency = sum(link.latency_ns for link in route)
    bottleneck = min(link.bandwidth_GBps for link in route)
    assert h.time_ns == pytest.approx(latency + (1 << 20) / bottleneck, rel=1e-12)


def test_switch_uplink_is_shared_by_transfers_from_one_device():
    topo = load_topology("switch8")
    engine, net = make()
    hs = [net.transfer(topo.route(0, dst), 1 << 20, f"0->{dst}") for dst in (1, 2, 3)]
    run(engine)
    uplink = topo.route(0, 1)[0]
    latency = sum(link.latency_ns for link in topo.route(0, 1))
    assert [h.time_ns for h in hs] == [pytest.approx(latency + 3 * (1 << 20) / uplink.bandwidth_GBps,
                                                     rel=1e-12)] * 3
    assert net.link_bytes(uplink) == 3 << 20


def ring_exchange(topo, steps, nbytes):
    """Every rank sends to its right neighbour and its left one, ``steps`` times in a chain
    (a step starts when the rank's previous send arrived). Returns (desc, time_ns) by event."""
    engine, net = make()
    n = len(topo.devices)
    log = []

    def send(src, dst, step):
        def arrived(h):
            log.append((h.desc, h.time_ns))
            if step + 1 < steps:
                send(src, dst, step + 1)
        # sizes differ per rank so that transfers overlap unevenly
        net.transfer(topo.route(src, dst), nbytes * (1 + src % 3), f"{src}->{dst} step {step}",
                     on_done=arrived)

    for rank in range(n):
        send(rank, (rank + 1) % n, 0)
        send(rank, (rank + 3) % n, 0)
    run(engine)
    usage = [(u.link.index, u.bytes_carried, u.busy_ns) for u in net.link_usage()]
    return log, usage


def test_c9_transfer_times_are_deterministic():
    topo = load_topology("ring8")
    first = ring_exchange(topo, steps=4, nbytes=100_003)
    second = ring_exchange(load_topology("ring8"), steps=4, nbytes=100_003)
    assert first == second
    log, usage = first
    assert len(log) == 8 * 2 * 4
    assert len(set(t for _, t in log)) > 8  # contention really spread the finishing times


def test_ring_neighbour_sends_do_not_contend():
    topo = load_topology("ring8")
    engine, net = make()
    hs = [net.transfer(topo.route(r, (r + 1) % 8), 4096, f"{r}") for r in range(8)]
    run(engine)
    link = topo.route(0, 1)[0]
    assert [h.time_ns for h in hs] == [link.latency_ns + 4096 / link.bandwidth_GBps] * 8


# -- property -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 12),
    nbytes=st.integers(1, 1 << 30),
    links=st.lists(st.tuples(st.floats(0.5, 1000.0), st.floats(0.0, 5000.0)),
                   min_size=1, max_size=3),
    start_ns=st.floats(0.0, 1e6),
)
def test_n_equal_transfers_on_one_route_share_it_equally(n, nbytes, links, start_ns):
    engine, net = make()
    route = chain(*links)
    handles = []
    start_at(engine, start_ns,
             lambda: handles.extend(net.transfer(route, nbytes, f"t{i}") for i in range(n)))
    run(engine)
    latency = sum(lat for _, lat in links)
    bottleneck = min(bw for bw, _ in links)
    expected = start_ns + latency + n * nbytes / bottleneck
    assert [h.time_ns for h in handles] == [pytest.approx(expected, rel=1e-12)] * n
    assert len({h.time_ns for h in handles}) == 1
    assert [net.link_bytes(link) for link in route] == [n * nbytes] * len(route)
    for usage in net.link_usage():
        # busy from the end of the latency phase to the finish: a difference of clock readings
        assert usage.busy_ns == handles[0].time_ns - (start_ns + latency)
        assert usage.streaming == 0
