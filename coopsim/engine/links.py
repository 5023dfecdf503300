"""The records ``Network`` keeps (ADR-0004): a transfer, a link's live state, a snapshot of a
link's use. Only ``coopsim.engine.network`` changes them."""

from __future__ import annotations

from typing import NamedTuple


class LinkState:
    """One link's live state: how many transfers stream across it, and what it has carried."""

    __slots__ = ("link", "streaming", "bytes_carried", "busy_ns", "busy_since_ns", "left",
                 "unfixed")

    def __init__(self, link) -> None:
        self.link = link
        self.streaming = 0  # transfers streaming across the link now
        self.left = 0.0  # scratch of _update_rates: bandwidth not yet given out (bytes/ns)
        self.unfixed = 0  # scratch of _update_rates: its transfers whose rate is not yet fixed
        self.bytes_carried = 0  # bytes of the transfers that finished crossing it (an int)
        self.busy_ns = 0.0  # closed intervals with streaming > 0
        self.busy_since_ns: float | None = None  # start of the open one, if streaming > 0


class LinkUsage(NamedTuple):
    """A snapshot of one link's use: ``busy_ns`` is the time with at least one transfer
    streaming across it, up to the moment of the snapshot; ``bytes_carried`` counts the bytes of
    the transfers that have finished (a transfer in flight counts when it completes)."""

    link: object
    bytes_carried: int
    busy_ns: float
    streaming: int


class Transfer:
    """``nbytes`` bytes moving over ``route``, made by ``Network.transfer``.

    ``state`` goes ``"latency"`` (from ``start_ns`` to ``stream_start_ns = start_ns +
    latency_ns``) -> ``"streaming"`` (at ``rate`` bytes/ns, which changes with contention) ->
    ``"done"`` (the last byte has arrived; ``handle`` completes at that instant).
    Transfers of zero bytes or over the empty route go straight from ``"latency"`` to
    ``"done"``.
    """

    __slots__ = ("seq", "route", "nbytes", "start_ns", "latency_ns", "stream_start_ns",
                 "handle", "state", "rate", "finish_ns", "_left", "_since_ns", "_links",
                 "_engine")

    def __init__(self, seq, route, nbytes, start_ns, latency_ns, handle, links, engine):
        self.seq = seq
        self.route = route
        self.nbytes = nbytes
        self.start_ns = start_ns
        self.latency_ns = latency_ns
        self.stream_start_ns = start_ns + latency_ns
        self.handle = handle
        self.state = "latency"
        self.rate: float | None = None  # bytes/ns, while streaming
        self.finish_ns: float | None = None  # projected from the current rate, while streaming
        self._left = nbytes  # bytes left at _since_ns
        self._since_ns = self.stream_start_ns
        self._links = links  # the LinkState of each link of route, in route order
        self._engine = engine

    @property
    def desc(self) -> str:
        return self.handle.desc

    @property
    def remaining_bytes(self) -> float:
        """Bytes that have not arrived yet, at the engine's current time."""
        if self.state == "latency":
            return float(self.nbytes)
        if self.state == "done":
            return 0.0
        return max(0.0, self._left - self.rate * (self._engine.now_ns - self._since_ns))

    def __repr__(self) -> str:
        return (f"<Transfer #{self.seq} {self.desc}: {self.nbytes} B, {self.state}, "
                f"{self.remaining_bytes:g} B left>")
