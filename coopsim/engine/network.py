"""Transfers between devices over directed links, with bandwidth contention (ADR-0004,
max-min fair sharing: ADR-0022).

Cost model: a transfer first spends its route's latency (the sum of its links' ``latency_ns``)
without using bandwidth, then streams its bytes. While streaming, the transfers share the links
max-min fairly (progressive filling, as SimGrid's network model): every transfer gets the
largest rate such that no link is over its bandwidth and no transfer could go faster without
slowing one that is not faster than it. Rates change only when a transfer starts or stops
streaming; between two such instants every rate is constant.

Invariants:
- At most one wake-up handle is live (``Network._wake``), due at the earliest upcoming latency
  expiry or projected finish. A superseded wake-up stays in the engine's queue but does nothing
  when it fires: its callback sees that it is no longer ``_wake``.
- A streaming transfer has ``_left - rate * (t - _since_ns)`` bytes left at time ``t``.
  ``_left`` and ``_since_ns`` are rebased only when its rate changes, so a transfer whose rate
  never changes finishes exactly at ``start_ns + latency_ns + nbytes / rate``.
- Whatever decides an order goes by creation order (``Transfer.seq``, a counter): transfers
  that finish at the same instant complete in creation order (C9). No set, no ``id()``.
- Units (C10): times in ns (floats), sizes in bytes, bandwidth in GB/s = 1e9 B/s = 1 byte/ns.
"""

from __future__ import annotations

import operator
from heapq import heappop, heappush

from coopsim.engine.core import Engine, Handle
from coopsim.engine.links import LinkUsage, Transfer, LinkState
from coopsim.errors import LinkDownError

# Bytes left below this count as delivered, so float round-off never costs an extra event.
DONE_EPSILON_BYTES = 1e-6

_INF = float("inf")


class Network:
    """The links of one simulated machine and the transfers crossing them.

    Work is done only when something changes: ``transfer`` is O(log n) (the transfer waits
    out its latency in a heap); each wake-up completes the transfers due, starts the ones whose
    latency has expired, recomputes the rates of the streaming transfers, and schedules the
    next wake-up.
    """

    __slots__ = ("engine", "_seq", "_waiting", "_streaming", "_links", "_wake", "_wake_ns",
                 "trace", "link_faults", "_resolved", "closed_form", "_claim", "claims", "settles",
                 "_recorded")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.trace = None  # the TraceRecorder of an active ctx.sim.trace, else None
        self._seq = 0
        self._waiting: list[tuple[float, int, Transfer]] = []  # heap: in their latency phase
        self._streaming: dict[int, Transfer] = {}  # seq -> transfer
        self._links: dict[int, LinkState] = {}  # link.index -> state, in first-use order
        self._wake: Handle | None = None
        self._wake_ns = _INF
        self.link_faults: dict = {}  # link index -> (bandwidth factor, added ns); 0: down (coopsim.testing)
        self._resolved: dict = {}  # id(route) -> (route, its link states): each route tuple checked once
        self.closed_form = True  # runs may claim idle links and compute their times (ADR-0031)
        self._claim = None  # the run that has the links to itself now, if any
        self.claims = self.settles = 0  # runs that claimed the links; of those, handed over
        self._recorded: dict = {}  # id(routes) -> routes whose links ``record`` registered

    # -- public API -------------------------------------------------------------------------

    def transfer(self, route: tuple, nbytes: int, desc, on_done=None,
                 extra_latency_ns: float = 0.0) -> Handle:
        """Start moving ``nbytes`` over ``route`` now; the handle completes when the last byte
        has arrived.

        ``route`` is a tuple of links as ``Topology.route`` returns it (``()`` for a device to
        itself). ``on_done(handle)``, if given, runs at completion before any other callback.
        The handle never completes synchronously, even for ``nbytes == 0`` or ``route == ()``
        (those take the route latency only). ``extra_latency_ns`` is added to the route's
        latency (a protocol's per-step latency, ADR-0023). Raises ``ValueError`` naming the argument for a
        route that is not a contiguous tuple of distinct links, or an ``nbytes`` that is not an
        int >= 0.
        """
        if self._claim is not None:
            self.settle()
        links = self._resolve_route(route)
        nbytes = _check_nbytes(nbytes)
        latency_ns = extra_latency_ns
        for link in route:
            latency_ns += link.latency_ns
        if self.link_faults:
            latency_ns += self.fault_latency_ns(route, desc)
        handle = Handle(desc)
        if on_done is not None:
            handle.add_callback(on_done)
        self._seq += 1
        t = Transfer(self._seq, route, nbytes, self.engine.now_ns, latency_ns, handle, links,
                     self.engine)
        heappush(self._waiting, (t.stream_start_ns, t.seq, t))
        if t.stream_start_ns < self._wake_ns:
            self._set_wake(t.stream_start_ns)
        if self.trace is not None:
            self.trace.transfer(t)
        return handle

    def active(self) -> list[Transfer]:
        """The transfers not yet done (latency or streaming), in creation order."""
        if self._claim is not None:
            self.settle()
        found = [entry[2] for entry in self._waiting]
        found.extend(self._streaming.values())
        found.sort(key=operator.attrgetter("seq"))
        return found

    def link_usage(self) -> list[LinkUsage]:
        """A snapshot of every link used so far, by link index."""
        if self._claim is not None:
            self.settle()
        return [self._usage(self._links[i]) for i in sorted(self._links)]

    def link_bytes(self, link) -> int:
        """Bytes that finished crossing ``link`` (0 if it was never used)."""
        if self._claim is not None:
            self.settle()
        state = self._links.get(link.index)
        return 0 if state is None else state.bytes_carried

    def link_busy_ns(self, link) -> float:
        """Time so far during which at least one transfer streamed across ``link``."""
        if self._claim is not None:
            self.settle()
        state = self._links.get(link.index)
        return 0.0 if state is None else self._usage(state).busy_ns

    # -- closed-form runs (ADR-0031) ---------------------------------------------------------

    def claimable(self) -> bool:
        """True if a run may take the links to itself now: closed forms are on, nothing is in
        flight or claimed, no link fault is injected and no trace records."""
        return (self.closed_form and self._claim is None and not self._waiting
                and not self._streaming and not self.link_faults and self.trace is None)

    def claim(self, owner) -> None:
        """``owner`` has the links to itself until it calls ``release``; anything that adds
        traffic or reads the links' state first calls ``owner.settle()``, which must hand
        its transfers in flight over to this network (``adopt``) and ``release``."""
        if not self.claimable():
            raise RuntimeError("Network.claim: the links are not idle (check claimable() first)")
        self._claim = owner
        self.claims += 1

    def release(self, owner) -> None:
        if self._claim is owner:
            self._claim = None

    def settle(self) -> None:
        """Hand the claiming run over to the transfer-by-transfer model now."""
        owner, self._claim = self._claim, None
        if owner is not None:
            self.settles += 1
            owner.settle()

    def record(self, routes, streams) -> None:
        """Account what a closed-form run moved: register the links of ``routes`` in order,
        once per list (as ``transfer`` does for every transfer, even of no bytes), then for each ``(route,
        nbytes, start ns, end ns, _)`` of ``streams`` add what ``_stop_streaming`` would have
        for a transfer alone on its links; each link's streams come in time order. The routes are
        ones ``Topology.route`` made, which ``transfer`` would accept: not checked again."""
        links = self._links
        if self._recorded.get(id(routes)) is not routes:  # links are never unregistered
            for route in routes:
                for link in route:
                    if link.index not in links:
                        links[link.index] = LinkState(link)
            self._recorded[id(routes)] = routes
        for route, nbytes, start_ns, end_ns, _ in streams:
            for link in route:
                state = links[link.index]
                state.bytes_carried += nbytes
                state.busy_ns += end_ns - start_ns

    def replica(self, engine: Engine) -> "Network":
        """An idle network on ``engine`` whose links' counters are copies of this one's (a
        run replays itself on it, then this network ``adopt``s it)."""
        other = Network(engine)
        for index, state in self._links.items():
            copy = other._links[index] = LinkState(state.link)
            copy.bytes_carried, copy.busy_ns = state.bytes_carried, state.busy_ns
        return other

    def adopt(self, replica: "Network") -> None:
        """Take over ``replica``'s links' counters and its transfers in flight (renumbered
        after this network's, in their order), then wake up for the earliest of them."""
        for index, state in replica._links.items():
            mine = self._links.get(index)
            if mine is None:
                mine = self._links[index] = LinkState(state.link)
            mine.streaming, mine.bytes_carried = state.streaming, state.bytes_carried
            mine.busy_ns, mine.busy_since_ns = state.busy_ns, state.busy_since_ns
        moved = [entry[2] for entry in replica._waiting]
        moved.extend(replica._streaming.values())
        moved.sort(key=operator.attrgetter("seq"))
        for t in moved:
            self._seq += 1
            t.seq = self._seq
            t._links = tuple(self._links[state.link.index] for state in t._links)
            t._engine = self.engine
            if t.state == "latency":
                heappush(self._waiting, (t.stream_start_ns, t.seq, t))
        for t in replica._streaming.values():
            self._streaming[t.seq] = t
        if moved:
            self._wake, self._wake_ns = None, _INF
            self._schedule_next()

    # -- the event loop ---------------------------------------------------------------------

    def _set_wake(self, at_ns: float) -> None:
        wake = Handle(("network wake-up at {} ns", at_ns))
        wake.add_callback(self._on_wake)
        self._wake, self._wake_ns = wake, at_ns
        self.engine.schedule(wake, at_ns)

    def _on_wake(self, wake: Handle) -> None:
        if wake is not self._wake:
            return  # superseded by an earlier wake-up, which already did this work
        self._wake, self._wake_ns = None, _INF
        now = self.engine.now_ns
        finished = []
        for t in self._streaming.values():
            if t.finish_ns <= now or t._left - t.rate * (now - t._since_ns) <= DONE_EPSILON_BYTES:
                finished.append(t)
        for t in finished:
            del self._streaming[t.seq]
            self._stop_streaming(t, now)
        changed = bool(finished)
        waiting = self._waiting
        while waiting and waiting[0][0] <= now:
            t = heappop(waiting)[2]
            if t.nbytes == 0 or not t._links:
                finished.append(t)
            else:
                self._start_streaming(t, now)
                changed = True
        if changed:
            self._update_rates(now)
        finished.sort(key=operator.attrgetter("seq"))
        for t in finished:
            t.state = "done"
            # Completes later in this same engine instant, after this callback, in this order.
            self.engine.schedule(t.handle, now)
        self._schedule_next()

    def _start_streaming(self, t: Transfer, now: float) -> None:
        t.state = "streaming"
        t._left, t._since_ns = t.nbytes, now
        for state in t._links:
            if state.streaming == 0:
                state.busy_since_ns = now
            state.streaming += 1
        self._streaming[t.seq] = t

    def _stop_streaming(self, t: Transfer, now: float) -> None:
        for state in t._links:
            state.streaming -= 1
            state.bytes_carried += t.nbytes
            if state.streaming == 0:
                state.busy_ns += now - state.busy_since_ns
                state.busy_since_ns = None

    def _update_rates(self, now: float) -> None:
        """Max-min fair rates by progressive filling; rebase only the transfers that changed.

        A transfer alone on every link of its route gets its slowest link's bandwidth (the
        common case: one transfer per link per collective step). The others are filled in
        rounds: each round finds the smallest fair share (bandwidth left / transfers not yet
        fixed) of their links, fixes every unfixed transfer crossing a link with that share at
        that rate, and takes their rates off the bandwidth left on their links. When every
        transfer is bottlenecked in the first round (equal flows on one link), the rates are
        those of equal sharing, bit for bit. Order: streaming order, deterministic (C9).
        """
        shared = []
        for t in self._streaming.values():
            rate = _INF
            for state in t._links:
                if state.streaming > 1:
                    shared.append(t)
                    break
                # bandwidth_GBps is bytes per ns (1 GB/s = 1e9 B/s = 1 B/ns)
                capacity = self._capacity(state)
                if capacity < rate:
                    rate = capacity
            else:
                _set_rate(t, rate, now)
        if shared:
            self._fill(shared, now)

    def _fill(self, flows, now: float) -> None:
        """Progressive filling of ``flows`` (those sharing a link; see ``_update_rates``)."""
        for t in flows:
            for state in t._links:
                state.left = self._capacity(state)
                state.unfixed = state.streaming
        while flows:
            share = _INF
            for t in flows:
                for state in t._links:
                    fair = state.left / state.unfixed
                    if fair < share:
                        share = fair
            fixed, flows = _split_bottlenecked(flows, share)
            for t in fixed:
                _set_rate(t, share, now)
                for state in t._links:
                    state.unfixed -= 1
                    state.left = max(0.0, state.left - share)

    def _capacity(self, state) -> float:
        """A link's bandwidth in bytes per ns, times its fault factor if one is injected."""
        if self.link_faults and state.link.index in self.link_faults:
            return state.link.bandwidth_GBps * self.link_faults[state.link.index][0]
        return state.link.bandwidth_GBps

    def _schedule_next(self) -> None:
        next_ns = self._waiting[0][0] if self._waiting else _INF
        for t in self._streaming.values():
            if t.finish_ns < next_ns:
                next_ns = t.finish_ns
        if next_ns != _INF:
            self._set_wake(next_ns)

    # -- helpers ----------------------------------------------------------------------------

    def _usage(self, state: LinkState) -> LinkUsage:
        busy_ns = state.busy_ns
        if state.busy_since_ns is not None:
            busy_ns += self.engine.now_ns - state.busy_since_ns
        return LinkUsage(state.link, state.bytes_carried, busy_ns, state.streaming)

    def _resolve_route(self, route) -> tuple[LinkState, ...]:
        """Check ``route`` and return the state of each of its links (registered on first use).

        A route tuple is checked once (tuples and links are immutable; ``Topology.route``
        returns the same tuple for a pair each time); the cache holds the tuple, so its id
        is not reused while cached, and it only saves time (C9: results never depend on it).
        """
        cached = self._resolved.get(id(route))
        if cached is not None and cached[0] is route:
            return cached[1]
        if not isinstance(route, tuple):
            raise ValueError(
                f"route must be a tuple of links (as Topology.route returns), got "
                f"{type(route).__name__}")
        indices = []
        for i, link in enumerate(route):
            try:
                index, src, dst, _, _ = (link.index, link.src, link.dst,
                                         link.bandwidth_GBps, link.latency_ns)
            except AttributeError:
                raise ValueError(f"route[{i}] must be a Link, got {link!r}") from None
            if i and route[i - 1].dst != src:
                raise ValueError(
                    f"route is not contiguous: route[{i - 1}] ends at {route[i - 1].dst!r} "
                    f"but route[{i}] starts at {src!r}")
            if index in indices:
                raise ValueError(f"route crosses link {index} ({src} -> {dst}) twice")
            known = self._links.get(index)
            if known is not None and known.link is not link and known.link != link:
                raise ValueError(
                    f"route[{i}] is {link!r} but link index {index} was {known.link!r}: "
                    f"one Network carries the links of one topology")
            indices.append(index)
        return self._register(route)

    def _register(self, route) -> tuple[LinkState, ...]:
        """The states of ``route``'s links, registered on first use; cached for the route."""
        states = []
        for link in route:
            state = self._links.get(link.index)
            if state is None:
                state = self._links[link.index] = LinkState(link)
            states.append(state)
        states = tuple(states)
        self._resolved[id(route)] = (route, states)
        return states

    def fault_latency_ns(self, route, desc) -> float:
        """The latency the faulted links of ``route`` add; raises ``LinkDownError`` if one is
        down (routes are fixed by the topology: nothing reroutes, docs/adr/0025-testing-hooks.md)."""
        added = 0.0
        what = desc if isinstance(desc, str) else desc[0].format(*desc[1:])
        for link in route:
            fault = self.link_faults.get(link.index)
            if fault is None:
                continue
            if fault[0] == 0:
                raise LinkDownError(
                    f"link {link.index} ({link.src} -> {link.dst}) is down (a fault injected with "
                    f"ctx.sim.faults): {what} cannot cross it; coopsim does not "
                    f"reroute around failed links")
            added += fault[1]
        return added


def _set_rate(t: Transfer, rate: float, now: float) -> None:
    """Give ``t`` its new rate, rebasing its bytes left only if the rate changed."""
    if rate != t.rate:
        if t.rate is not None:
            t._left -= t.rate * (now - t._since_ns)
            t._since_ns = now
        t.rate = rate
        t.finish_ns = t._since_ns + t._left / rate


def _split_bottlenecked(flows, share):
    """(the flows crossing a link whose fair share is ``share``, the others), in order."""
    fixed, rest = [], []
    for t in flows:
        for state in t._links:
            if state.left / state.unfixed <= share:
                fixed.append(t)
                break
        else:
            rest.append(t)
    return fixed, rest


def _check_nbytes(nbytes) -> int:
    if isinstance(nbytes, bool):
        raise ValueError(f"nbytes must be an int >= 0, got {nbytes!r}")
    try:
        n = operator.index(nbytes)
    except TypeError:
        raise ValueError(f"nbytes must be an int >= 0, got {nbytes!r}") from None
    if n < 0:
        raise ValueError(f"nbytes must be an int >= 0, got {n}")
    return n
