"""The transfer model's closed form (ADR-0031) against its event model, bit for bit.

Every program runs twice in a fresh context: with closed forms on (the default) and with
``network.closed_form = False``, which forces the event-by-event model everywhere. Each rank
records the virtual time at which each of its collectives completed and every output bit, and
the two runs must agree exactly, together with the links' counters. Each case also asserts
which path ran: alone on idle links the closed form must take every collective; with other
traffic in flight (two groups at once, p2p during a collective, a collective while a query
reads the links) the run must hand over to the event model (``settles``) or never claim.
"""

from __future__ import annotations

import numpy as np
import pytest

import coopsim

ALGORITHMS = {  # collective -> the algorithms its schedule may use on one node
    "all_reduce": ("ring", "halving_doubling", "double_binary_tree", "binomial_tree", "direct"),
    "reduce_scatter": ("ring", "halving_doubling", "direct"),
    "all_gather": ("ring", "halving_doubling", "direct"),
    "broadcast": ("double_binary_tree", "ring", "binomial_tree"),
    "reduce": ("double_binary_tree", "binomial_tree", "direct"),
    "all_to_all": ("direct",),
}
SIZES = (1, 13, 4099)


def _issue(ctx, dist, kind, rank, p, count, group=None, op="SUM"):
    """One collective of ``count`` float32 per rank; returns its output tensors."""
    rng = np.random.default_rng(1000 * rank + count)
    data = ctx.tensor(rng.standard_normal(count * (p if kind in ("reduce_scatter", "all_to_all") else 1)).astype(np.float32))
    reduce_op = getattr(dist.ReduceOp, op)
    if kind == "all_reduce":
        dist.all_reduce(data, op=reduce_op, group=group)
        return [data]
    if kind == "reduce":
        dist.reduce(data, 0, op=reduce_op, group=group)
        return [data]
    if kind == "broadcast":
        dist.broadcast(data, 0, group=group)
        return [data]
    if kind == "all_gather":
        out = ctx.zeros(count * p, dtype=ctx.float32)
        dist.all_gather_single(out, data, group=group)
        return [out]
    if kind == "reduce_scatter":
        out = ctx.zeros(count, dtype=ctx.float32)
        dist.reduce_scatter_single(out, data, op=reduce_op, group=group)
        return [out]
    out = ctx.zeros(count * p, dtype=ctx.float32)
    dist.all_to_all_single(out, data, group=group)
    return [out]


def _both(program, nprocs, topology, ccl):
    """``program(rank, ctx, seen)`` run with and without closed forms: the two ``seen``
    dicts, the two link-usage snapshots, and the closed-form run's (claims, settles)."""
    results = []
    for closed in (True, False):
        seen: dict = {}
        with coopsim.RuntimeContext(topology, ccl=ccl) as ctx:
            network = ctx.sim.runtime.network
            network.closed_form = closed
            ctx.multiprocessing.spawn(program, args=(ctx, seen), nprocs=nprocs)
            usage = [(u.link.index, u.bytes_carried, u.busy_ns) for u in network.link_usage()]
            results.append((seen, usage, (network.claims, network.settles)))
    (fast, fast_usage, counts), (slow, slow_usage, slow_counts) = results
    assert slow_counts == (0, 0)
    assert fast.keys() == slow.keys()
    for key in slow:
        assert fast[key] == slow[key], key
    assert fast_usage == slow_usage
    return fast, counts


def _sleep(ctx, ns):
    rt = ctx.sim.runtime
    rt.wait(rt.engine.timer(ns))


def _record(ctx, seen, key, outs):
    seen[key] = (ctx.sim.now_ns(), [t.numpy().tobytes() for t in outs])


@pytest.mark.parametrize("topology,nprocs,protocol", [
    ("dgx_h100", 8, "auto"), ("fully_connected8", 8, "ideal"), ("switch8", 5, "ideal"),
    ("cluster_2x8", 16, "auto"), ("torus4x4", 16, "ideal"), ("ring8", 8, "ideal")])
def test_closed_form_equals_event_model_alone_on_the_links(topology, nprocs, protocol):
    """Every collective x algorithm x size, one after another: equal times, bits, counters.
    On switches every step of ring, halving-doubling and binomial trees has its links to
    itself, so each of those takes the closed form; double binary trees never do (a parent
    receives from both children at once over its one link from the switch)."""
    sizes = SIZES if nprocs <= 8 else SIZES[::2]
    for j in range(max(map(len, ALGORITHMS.values()))):
        chosen = {kind: algorithms[j] for kind, algorithms in ALGORITHMS.items() if j < len(algorithms)}
        cases = [(kind, count, op) for kind in chosen for count in sizes for op in ("SUM", "AVG")
                 if op == "SUM" or (nprocs <= 8 and kind in ("all_reduce", "reduce", "reduce_scatter"))]
        claimed = {}

        def program(rank, ctx, seen, cases=cases, claimed=claimed):
            dist = ctx.distributed
            dist.init_process_group("nccl")
            network = ctx.sim.runtime.network
            for i, (kind, count, op) in enumerate(cases):
                before = network.claims
                outs = _issue(ctx, dist, kind, rank, nprocs, count, op=op)
                _record(ctx, seen, (i, rank), outs)
                if rank == 0 and network.closed_form:
                    claimed[kind, count, op] = network.claims - before
                dist.barrier()

        _, (_, settles) = _both(program, nprocs, topology,
                                {"model": "transfer", "protocol": protocol, "algorithms": chosen})
        assert settles == 0
        if topology in ("dgx_h100", "switch8"):
            for (kind, count, op), n in claimed.items():
                if chosen[kind] in ("ring", "halving_doubling", "binomial_tree"):
                    assert n == 1, (kind, chosen[kind], count, op)
                if chosen[kind] == "double_binary_tree":
                    assert n == 0, (kind, chosen[kind], count, op)


def test_closed_form_hands_over_when_two_groups_run_at_once():
    """Two groups of 4 on dgx_h100 issue all_reduces at once: the first claims the links, the
    second's transfers make it settle; times and bits equal the event model's."""

    def program(rank, ctx, seen):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        groups = [dist.new_group([0, 1, 2, 3]), dist.new_group([4, 5, 6, 7])]
        group = groups[rank // 4]
        for i, count in enumerate((1, 4099, 262144)):
            if rank >= 4:
                _sleep(ctx, 50.0 * i)  # the second group starts a little later
            outs = _issue(ctx, dist, "all_reduce", rank % 4, 4, count, group=group)
            _record(ctx, seen, (i, rank), outs)

    _, (_, settles) = _both(program, 8, "dgx_h100", {"model": "transfer"})
    assert settles >= 3


def test_closed_form_hands_over_to_p2p_and_link_queries_during_a_collective():
    """Ranks 2-7 run all_reduces while rank 0 adds traffic on their links (a transfer that
    starts in the middle of a claimed collective, one already in flight when a collective
    starts), reads the links' counters mid-way, sends to rank 1 by p2p at once, or injects a
    link fault mid-way (after which no run claims the links): every claim hands over or none
    is made, and results are unchanged."""
    actions = (("transfer", 12000.0), ("transfer", 0.0), ("query", 12000.0), ("p2p", 0.0),
               ("fault", 12000.0), ("none", 0.0))

    def program(rank, ctx, seen):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        pair, six = dist.new_group([0, 1]), dist.new_group([2, 3, 4, 5, 6, 7])
        rt = ctx.sim.runtime
        for i, (action, at_ns) in enumerate(actions):
            dist.barrier()
            if rank >= 2:
                outs = _issue(ctx, dist, "all_reduce", rank - 2, 6, 262144, group=six)
                _record(ctx, seen, (i, rank), outs)
            elif rank == 0:
                _sleep(ctx, at_ns)
                if action == "transfer":  # from device 2 to 3, through the collective's links
                    rt.wait(rt.network.transfer(rt.topology.route(2, 3), 1 << 22, "other traffic"))
                elif action == "fault":  # a link of the collective gets slower mid-way
                    ctx.sim.faults.add({"kind": "link", "src": 2, "dst": 3, "bandwidth_factor": 0.5})
                elif action == "query":
                    seen[i, "usage"] = [(u.link.index, u.bytes_carried, u.busy_ns)
                                        for u in rt.network.link_usage()]
                elif action == "p2p":
                    dist.send(ctx.ones(262144, dtype=ctx.float32), 1, group=pair)
                seen[i, "end"] = ctx.sim.now_ns()
            elif action == "p2p":
                big = ctx.zeros(262144, dtype=ctx.float32)
                dist.recv(big, 0, group=pair)
                _record(ctx, seen, (i, rank), [big])

    _, (_, settles) = _both(program, 8, "dgx_h100", {"model": "transfer"})
    assert settles == 4, settles


class _Link:
    def __init__(self, index, src, dst):
        self.index, self.src, self.dst = index, src, dst
        self.bandwidth_GBps, self.latency_ns = 1.0, 0.0


def _profile(steps):
    from coopsim.distributed.closedform import Profile

    profile = Profile.__new__(Profile)
    profile.steps, profile.routes, profile.links = steps, [], 1
    profile.step_latency_ns = 0.0
    return profile


@pytest.mark.parametrize("gap_ns,early", [(1e-9, True), (1.0, False)])
def test_closed_form_declines_where_the_network_completes_a_transfer_early(gap_ns, early):
    """A wake-up (here: an empty transfer's) within DONE_EPSILON_BYTES of a streaming
    transfer's end makes the network complete it at that wake-up, before its computed end:
    ``timeline`` must then decline (None), and only then."""
    from coopsim.distributed.closedform import timeline
    from coopsim.engine import Engine, Network

    route = (_Link(0, "a", "b"),)
    wake_ns = 1000.0 - gap_ns
    engine = Engine()
    network = Network(engine)
    ends = {}
    network.transfer(route, 1000, "moving", on_done=lambda h: ends.setdefault("moving", engine.now_ns))
    network.transfer((), 0, "quiet", extra_latency_ns=wake_ns)
    while engine.step_instant():
        pass
    assert (ends["moving"] < 1000.0) == early
    steps = [([0, 1, 2, 3], [], [(2, 3, wake_ns)], [(0, 1, ((route, 0.0, 1000.0, 1000, 1.0, (0,)),), 0.0, 1000, None)])]
    found = timeline(_profile(steps), 4, 0.0)
    assert (found is None) == early
    if not early:
        assert found[0] == [1000.0, 1000.0, wake_ns, wake_ns]
