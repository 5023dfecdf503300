"""A timed run's times in closed form, while it has the links to itself (ADR-0031).

``TimedRun`` (the transfer model) moves a schedule's transfers over ``Network`` one event at a
time. When nothing else is on the links and no two of the run's transfers ever stream over one
link at once, every transfer streams alone at its route's slowest bandwidth, and the whole run
is a dataflow over plain numbers: a transfer of step k starts when both its ends have started
step k, streams ``latency`` later for ``wire bytes / rate`` ns, and a rank starts its next step
when its last item of this one is done. ``timeline`` computes that with the very float
operations, in the very order, the event-driven model uses, so every time is equal bit for bit;
it returns None (the caller then runs the event model) when the condition does not hold:

- two streaming transfers would overlap on a link (visited in step order, a link's streams must
  follow one another in time: a conservative test);
- a network wake-up would fall so close before a transfer's end that the network's
  ``DONE_EPSILON_BYTES`` rule would complete it early.

Invariants: a ``Profile`` holds only what a plan's shape decides (routes, latencies, bytes,
rates), never a time, so one profile serves every collective of that shape; ``timeline`` is
pure.
"""

from __future__ import annotations

from bisect import bisect_left

from coopsim.distributed.algorithms import chunks
from coopsim.distributed.algorithms.protocols import reduce_terms
from coopsim.engine import Engine
from coopsim.engine.network import DONE_EPSILON_BYTES

_NEG = float("-inf")


class Profile:
    """Per step: ``(its ranks, locals, quiet, moving)``, each list in listed order (the order
    among them does not matter: a step's items read only when their ranks started it).
    ``locals``: ``(rank, delay ns)`` of each local copy or reduction; ``quiet``: ``(src, dst,
    latency ns)`` of each transfer of one stripe that never streams (no bytes, or no link);
    ``moving``: ``(src, dst, stripes, smallest stripe latency, data bytes, reduce)`` with
    ``stripes`` a tuple of ``(route, latency ns, stream ns or None, wire bytes, rate, slots)``
    (None: that stripe never streams; ``slots``: its links' numbers 0 .. ``links`` - 1) and
    ``reduce`` None or ``reduce_terms``. ``routes``: every route the run uses, once."""

    __slots__ = ("steps", "routes", "links", "step_latency_ns")

    def __init__(self, run) -> None:
        plan = run.plan
        protocol = plan.protocol
        self.step_latency_ns = protocol.step_latency_ns
        gamma = plan.gamma_ns_per_byte
        memo: dict = {}  # (src, dst, data bytes) -> that transfer's item, without its reduces
        costs: dict = {}  # (route class, data bytes) -> _cost of a transfer of one route
        routes: dict = {}  # id(route) -> route
        slots: dict = {}  # link index -> its slot in ``timeline``'s list of links
        self.steps = []
        itemsize = plan.itemsize
        for step in plan.schedule.steps:  # by columns: no Xfer objects (ADR-0027)
            srcs, dsts = step.src.tolist(), step.dst.tolist()
            local, quiet, moving = [], [], []
            for src, dst, count, reduce in zip(srcs, dsts, step.count.tolist(), step.reduce.tolist()):
                nbytes = count * itemsize
                if src == dst:
                    local.append((src, nbytes * gamma if reduce else 0.0))
                    continue
                key = (src, dst, nbytes)
                item = memo.get(key)
                if item is None:
                    item = memo[key] = _item(run, src, dst, nbytes, costs)
                    if item[0] == MOVING:
                        for stripe in item[3]:
                            routes[id(stripe[0])] = stripe[0]
                        item = memo[key] = item[:3] + (tuple(
                            stripe + (tuple(slots.setdefault(link.index, len(slots)) for link in stripe[0]),)
                            for stripe in item[3]),) + item[4:]
                    else:
                        routes[id(item[4])] = item[4]
                if item[0] == QUIET:
                    quiet.append(item[1:4])
                else:
                    terms = reduce_terms(nbytes, gamma, protocol.slice_bytes) if reduce and gamma else None
                    moving.append(item[1:] + (terms,))
            self.steps.append((sorted(set(srcs).union(dsts)), local, quiet, moving))
        self.routes = list(routes.values())
        self.links = len(slots)


QUIET, MOVING = 1, 2


def _item(run, src, dst, nbytes, costs):
    """A transfer split and charged as ``TimedRun._send`` and ``Network.transfer`` do. A pair
    with one route is costed once per ``Topology.route_class`` (equal classes: equal link
    latencies and bandwidths, position by position, so equal sums and minima bit for bit)."""
    plan = run.plan
    protocol = plan.protocol
    if plan.rails is None:
        topology = run.rt.topology
        a, b = plan.devices[src], plan.devices[dst]
        route = topology.route(a, b)
        key = (topology.route_class(a, b), nbytes)
        cost = costs.get(key)
        if cost is None:
            cost = costs[key] = _cost(protocol, route, nbytes)
        latency_ns, stream_ns, part, rate, min_latency_ns = cost
        if stream_ns is None:
            return (QUIET, src, dst, latency_ns, route)
        return (MOVING, src, dst, ((route, latency_ns, stream_ns, part, rate),), min_latency_ns, nbytes)
    routes, min_latency_ns = run.stripes(src, dst)
    wire = nbytes if protocol.bandwidth_efficiency == 1.0 else protocol.wire_bytes(nbytes)
    parts = chunks(wire, len(routes)) if len(routes) > 1 else ((0, wire),)
    stripes = []
    for route, (_, part) in zip(routes, parts):
        latency_ns = protocol.step_latency_ns
        for link in route:
            latency_ns += link.latency_ns
        if part and route:
            rate = min(link.bandwidth_GBps for link in route)
            stripes.append((route, latency_ns, part / rate, part, rate))
        else:
            stripes.append((route, latency_ns, None, part, None))
    if len(stripes) == 1 and stripes[0][2] is None:
        return (QUIET, src, dst, stripes[0][1], stripes[0][0])
    return (MOVING, src, dst, tuple(stripes), min_latency_ns, nbytes)


def _cost(protocol, route, nbytes) -> tuple:
    """``(latency ns, stream ns or None, wire bytes, rate, route latency ns)`` of ``nbytes``
    over ``route`` alone, in ``_item``'s and ``TimedRun.stripes``' float operations."""
    wire = nbytes if protocol.bandwidth_efficiency == 1.0 else protocol.wire_bytes(nbytes)
    latency_ns = protocol.step_latency_ns
    for link in route:
        latency_ns += link.latency_ns
    min_latency_ns = sum(link.latency_ns for link in route)
    if wire and route:
        rate = min(link.bandwidth_GBps for link in route)
        return (latency_ns, wire / rate, wire, rate, min_latency_ns)
    return (latency_ns, None, wire, None, min_latency_ns)


def timeline(profile: Profile, p: int, start_ns: float):
    """``(each rank's completion time, the streams)`` of a run started at ``start_ns`` on idle
    links, or None where the event model must run it (see the module docstring). ``streams``:
    ``(route, wire bytes, stream start, end, rate)`` of every stripe that streams, in step
    order (so each link's in time order), for ``Network.record``."""
    step_ns = profile.step_latency_ns
    ready = [start_ns] * p  # when each rank finished its last step so far
    done = [_NEG] * p  # scratch: when each rank finishes the current step
    last_end = [_NEG] * profile.links  # per link slot: end of the last stream over it
    wakes = []  # every time the network wakes up: each stripe's stream start and end
    wake = wakes.append
    streams = []
    for ranks, local, quiet, moving in profile.steps:
        for src, dst, latency_ns in quiet:
            t = ready[src]
            if ready[dst] > t:
                t = ready[dst]
            t += latency_ns
            wake(t)
            if t > done[src]:
                done[src] = t
            if t > done[dst]:
                done[dst] = t
        for src, delay_ns in local:
            t = ready[src] + delay_ns
            if t > done[src]:
                done[src] = t
        for src, dst, stripes, min_latency_ns, nbytes, reduce in moving:
            t0 = ready[src] if ready[src] >= ready[dst] else ready[dst]
            arrived = _NEG
            for route, latency_ns, stream_ns, part, rate, slots in stripes:
                begin = t0 + latency_ns
                wake(begin)
                if stream_ns is None:
                    end = begin
                else:
                    end = begin + stream_ns
                    for slot in slots:
                        if last_end[slot] > begin:
                            return None  # the link would be shared
                        last_end[slot] = end
                    wake(end)
                    streams.append((route, part, begin, end, rate))
                if end > arrived:
                    arrived = end
            if arrived > done[src]:
                done[src] = arrived
            if reduce is not None:  # pipelined_reduce_ns, inlined with its constant terms
                reduce_ns, tail_ns = reduce
                if tail_ns is None:
                    arrived += reduce_ns
                else:
                    lead_ns = reduce_ns - tail_ns - (arrived - (t0 + step_ns + min_latency_ns))
                    arrived += (lead_ns if lead_ns > 0.0 else 0.0) + tail_ns
            if arrived > done[dst]:
                done[dst] = arrived
        if len(ranks) == p:  # every rank has an item in the step, so a done time
            ready, done = done, [_NEG] * p
        else:
            for r in ranks:
                ready[r], done[r] = done[r], _NEG
    if streams:
        wakes.sort()
        for _, part, begin, end, rate in streams:
            i = bisect_left(wakes, end) - 1
            if wakes[i] > begin and part - rate * (wakes[i] - begin) <= DONE_EPSILON_BYTES:
                return None  # the network would complete it at that earlier wake-up
    return ready, streams


class Replay(Engine):
    """A private engine, its clock at ``start_ns``, that remembers what it schedules: a run
    replays itself on it up to the present, then hands ``pending()`` to the real engine."""

    __slots__ = ("log",)

    def __init__(self, start_ns: float) -> None:
        super().__init__()
        self.now_ns = start_ns
        self.log: list = []

    def schedule(self, handle, at_ns: float):
        self.log.append((at_ns, handle))
        return super().schedule(handle, at_ns)

    def timer(self, ns: float, desc=None):
        handle = super().timer(ns, desc)
        self.log.append((self.now_ns + ns, handle))
        return handle

    def pending(self) -> list:
        """``(time, handle)`` of every handle scheduled and not yet done, in the order the
        engine would complete them."""
        return sorted(((t, h) for t, h in self.log if not h.done), key=_time)


def _time(entry) -> float:
    return entry[0]
