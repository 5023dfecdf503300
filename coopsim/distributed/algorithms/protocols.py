"""NCCL's protocols (LL, LL128, Simple) as cost parameters, and NCCL's way of choosing one
(ADR-0023). Pure code: no runtime, no clock.

The structure is that of NCCL's tuning model (``src/graph/tuning.cc``): a collective costs a
base latency once, a hardware latency per step, and its bytes at the links' bandwidth times a
per-protocol efficiency; NCCL picks the protocol whose predicted time is smallest. Here:

- ``base_latency_ns`` is charged once per collective, after the kernel launch;
- ``step_latency_ns`` is added to every transfer's route latency;
- a transfer of b bytes puts ``ceil(b / bandwidth_efficiency)`` bytes on the links (LL sends
  a 4-byte flag with every 4 bytes of data, LL128 8 bytes of flags per 128-byte line);
- ``slice_bytes`` is the pipelining unit: a received chunk is reduced slice by slice while the
  next slices arrive, so a reducing step costs about max(transfer, reduction) plus the
  reduction of one slice, instead of their sum (see ``pipelined_reduce_ns``).

``IDEAL`` is no protocol: no latency added, every byte once, the reduction after the whole
chunk (the Thakur-Rabenseifner-Gropp model, which the closed-form tests check).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PROTOCOLS = ("LL", "LL128", "Simple")  # NCCL's order, also the tie-break order
CHOICES = ("auto",) + PROTOCOLS + ("ideal",)  # ccl.yaml's protocol: settings
FIELDS = ("base_latency_ns", "step_latency_ns", "bandwidth_efficiency", "slice_bytes")


@dataclass(frozen=True)
class Protocol:
    """One protocol's costs (see the module docstring for what each field charges)."""

    name: str
    base_latency_ns: float
    step_latency_ns: float
    bandwidth_efficiency: float
    slice_bytes: int | None  # None: no pipelining (the reduction follows the whole chunk)

    def wire_bytes(self, nbytes: int) -> int:
        """Bytes on the links for ``nbytes`` of data (exactly ``nbytes`` at efficiency 1)."""
        if self.bandwidth_efficiency == 1.0:
            return nbytes
        return math.ceil(nbytes / self.bandwidth_efficiency)


IDEAL = Protocol("ideal", 0.0, 0.0, 1.0, None)


def pipelined_reduce_ns(nbytes: int, gamma_ns_per_byte: float, slice_bytes: int | None,
                        stream_ns: float) -> float:
    """Time from a chunk's last byte arriving to its reduction being done.

    ``stream_ns``: time from its first byte to its last byte arriving. Without slices the whole
    reduction follows (``nbytes * gamma``). With slices, slice i is reduced while slice i+1
    arrives: the reduction ends one slice's reduction after the later of the arrival and the
    reduction of everything before (closed form of the per-slice pipeline, no per-slice work).
    """
    reduce_ns, tail_ns = reduce_terms(nbytes, gamma_ns_per_byte, slice_bytes)
    if tail_ns is None:
        return reduce_ns
    return max(0.0, reduce_ns - tail_ns - stream_ns) + tail_ns


def reduce_terms(nbytes: int, gamma_ns_per_byte: float, slice_bytes: int | None) -> tuple:
    """``(reduction ns, its last slice's ns or None)``: ``pipelined_reduce_ns``' terms that do
    not depend on the stream (None: no slices or nothing to reduce, the whole reduction follows)."""
    reduce_ns = nbytes * gamma_ns_per_byte
    if slice_bytes is None or not reduce_ns:
        return reduce_ns, None
    return reduce_ns, min(slice_bytes, nbytes) * gamma_ns_per_byte


def parse_protocols(data, source: str, fail) -> dict[str, Protocol]:
    """``data``: ``{LL: {...}, LL128: {...}, Simple: {...}}`` with every key of ``FIELDS``;
    ``fail(message)`` raises the caller's config error."""
    if not isinstance(data, dict) or sorted(data) != sorted(PROTOCOLS):
        fail(f"{source}: protocols: expected a mapping with exactly the keys "
             f"{', '.join(PROTOCOLS)}, got {data!r}")
    table = {}
    for name in PROTOCOLS:
        entry = data[name]
        where = f"{source}: protocols.{name}"
        if not isinstance(entry, dict) or sorted(entry) != sorted(FIELDS):
            fail(f"{where}: expected the keys {', '.join(FIELDS)}, got {entry!r}")
        values = {}
        for key in FIELDS:
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                fail(f"{where}.{key}: expected a number >= 0, got {value!r}")
            values[key] = value
        if not 0 < values["bandwidth_efficiency"] <= 1:
            fail(f"{where}.bandwidth_efficiency: expected a number in (0, 1], "
                 f"got {values['bandwidth_efficiency']!r}")
        if not isinstance(values["slice_bytes"], int) or values["slice_bytes"] < 1:
            fail(f"{where}.slice_bytes: expected an int >= 1, got {values['slice_bytes']!r}")
        table[name] = Protocol(name, float(values["base_latency_ns"]),
                               float(values["step_latency_ns"]),
                               float(values["bandwidth_efficiency"]), values["slice_bytes"])
    return table


def choose(table: dict[str, Protocol], setting: str, predict) -> Protocol:
    """``setting``: a protocol name (fixed, as ``NCCL_PROTO``), ``"ideal"`` (``IDEAL``) or
    ``"auto"``: the protocol with the smallest ``predict(protocol)`` (ns), ties to the earlier
    in ``PROTOCOLS`` (as NCCL)."""
    if setting == "ideal":
        return IDEAL
    if setting != "auto":
        return table[setting]
    best, best_ns = None, math.inf
    for name in PROTOCOLS:
        ns = predict(table[name])
        if ns < best_ns:
            best, best_ns = table[name], ns
    return best
