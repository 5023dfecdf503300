"""The topology YAML schema: reading, validating and building a ``Topology``.

The schema (ADR-0003 is the full reference; ``coopsim/configs/topologies/small.yaml`` has a copy):

    name: str                      # optional; default: the file's stem
    description: str               # optional
    max_devices: int > 0           # optional; the sanity bound on the device count (16384)
    device_kinds:                  # required; kind name -> spec
      <kind>: {memory_bytes: int > 0, memory_bandwidth_GBps: > 0,
               peak_flops: {<dtype>: FLOP/s > 0, ...}, launch_overhead_ns: >= 0}
    devices:                       # required, non-empty; numbered in list order
      - {kind: <kind>, count: int > 0}
    links:                         # required; each entry is one pattern
      - {pattern: ring, bandwidth_GBps: > 0, latency_ns: >= 0,
         bidirectional: bool = true, devices: [i, ...] = all}
      - {pattern: fully_connected, bandwidth_GBps, latency_ns, devices}
      - {pattern: switch, bandwidth_GBps, latency_ns, switch_latency_ns: >= 0 = 0, devices,
         in_network_reduction: {efficiency: 0 < e <= 1, latency_ns: >= 0}}  # optional: NVLS
      - {pattern: torus2d, dims: [rows, cols], bandwidth_GBps, latency_ns, devices}
      - {pattern: hierarchical, nodes: int > 0, devices_per_node: int > 0,
         intra: {pattern: ring | fully_connected | switch | torus2d, ...its keys but devices},
         nic: {bandwidth_GBps, latency_ns, per_device: bool = true},
         network: {switch_latency_ns: >= 0 = 0}}        # network is optional
    protocols: nccl                # optional: collectives run NCCL's protocols (ccl.yaml's
                                   # table: LL, LL128, Simple); absent: ideal whole-message steps

Every violation raises ``TopologyError("<file>: <key.path>: expected <what>, got <value>")``.
Numbers: ``bool`` is never a number; ints and floats are; YAML 1.2 floats such as ``1e12``
and ``19.5e12`` (strings under PyYAML's YAML 1.1 rules) are read as floats by ``_Loader``;
a quoted number is a string and is rejected.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from coopsim.topology import patterns
from coopsim.topology.errors import TopologyError
from coopsim.topology.model import DTYPES, Device, DeviceKind, InNetworkReduction, Topology

TOP_REQUIRED = ("device_kinds", "devices", "links")
TOP_OPTIONAL = ("name", "description", "max_devices", "protocols")
PROTOCOL_FAMILIES = ("nccl",)
# The sanity bound on a topology's device count: above it the model (routes, per-device state)
# would exhaust memory long before a simulation ran. A topology may raise it (max_devices).
MAX_DEVICES = 16384
KIND_REQUIRED = ("memory_bytes", "memory_bandwidth_GBps", "peak_flops", "launch_overhead_ns")
DEVICE_REQUIRED = ("kind", "count")
_LINK = ("bandwidth_GBps", "latency_ns")
# pattern -> (required keys, optional keys); "devices" (a subset) is added for top-level entries
PATTERN_KEYS = {
    "ring": (("pattern",) + _LINK, ("bidirectional",)),
    "fully_connected": (("pattern",) + _LINK, ()),
    "switch": (("pattern",) + _LINK, ("switch_latency_ns", "in_network_reduction")),
    "torus2d": (("pattern", "dims") + _LINK, ()),
    "hierarchical": (("pattern", "nodes", "devices_per_node", "intra", "nic"), ("network",)),
}
SUBSET_PATTERNS = ("ring", "fully_connected", "switch", "torus2d")  # accept `devices: [...]`
INTRA_PATTERNS = ("ring", "fully_connected", "switch", "torus2d")
# the "did you mean" for peak_flops keys (string similarity would suggest int32 for tf32)
DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16",
                 "bf16": "bfloat16", "int": "int32", "long": "int64", "fp64": "float64",
                 "double": "float64"}
NIC_REQUIRED, NIC_OPTIONAL = _LINK, ("per_device",)
NETWORK_OPTIONAL = ("switch_latency_ns",)
REDUCTION_REQUIRED = ("efficiency", "latency_ns")


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that reads YAML 1.2 floats (``1e12``) and rejects duplicate keys.

    The resolver table is copied onto this subclass by ``add_implicit_resolver``, so
    ``yaml.SafeLoader`` itself is left untouched.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable key: SafeConstructor reports it below
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


# Appended after PyYAML's own resolvers, so it only sees what YAML 1.1 left as a string.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


def read_yaml(text: str, source: str):
    """Parse YAML text; a syntax error becomes a ``TopologyError`` naming the line."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyError(source, where, "valid YAML", problem) from exc


def _show(value) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


class _Checker:
    """Typed accessors that raise ``TopologyError`` naming ``source`` and the key path."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, expected: str, got: str):
        raise TopologyError(self.source, path or "(top level)", expected, got)

    def mapping(self, value, path: str, required=(), optional=(), aliases=None) -> dict:
        """Check ``value`` is a mapping with exactly the accepted keys; unknown keys get a
        "did you mean" from ``aliases`` if given, else from the closest accepted key."""
        accepted = sorted(set(required) | set(optional))
        if not isinstance(value, Mapping):
            self.fail(path, f"a mapping with the keys {accepted}", _show(value))
        for key in value:
            if key not in accepted:
                hint = ([aliases[key]] if aliases and key in aliases else [] if aliases
                        else difflib.get_close_matches(str(key), accepted, n=1))
                got = f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                self.fail(_join(path, key), f"one of the keys {accepted}", got)
        for key in required:
            if key not in value:
                self.fail(_join(path, key), f"the required key {key!r}",
                          f"no such key (present: {sorted(map(str, value))})")
        return dict(value)

    def number(self, value, path: str, *, positive: bool) -> float:
        what = "a positive number" if positive else "a non-negative number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(path, what, _show(value))
        if value < 0 or (positive and value == 0):
            self.fail(path, what, _show(value))
        return float(value)

    def integer(self, value, path: str, *, minimum: int = 1) -> int:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not integral or value < minimum:
            self.fail(path, what, _show(value))
        return int(value)

    def boolean(self, value, path: str) -> bool:
        if not isinstance(value, bool):
            self.fail(path, "true or false", _show(value))
        return value

    def string(self, value, path: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(path, "a non-empty string", _show(value))
        return value

    def sequence(self, value, path: str, what: str) -> list:
        if not isinstance(value, (list, tuple)):
            self.fail(path, what, _show(value))
        return list(value)

    def choice(self, value, path: str, choices, what: str):
        if isinstance(value, bool) or value not in choices:
            self.fail(path, f"one of the {what} {sorted(choices)}", _show(value))
        return value


def parse_topology(data, source: str = "<mapping>", default_name: str = "unnamed") -> Topology:
    """Validate an already-parsed spec (a mapping, as from YAML) and build its ``Topology``."""
    c = _Checker(source)
    top = c.mapping(data, "", TOP_REQUIRED, TOP_OPTIONAL)
    name = c.string(top["name"], "name") if "name" in top else default_name
    description = c.string(top["description"], "description") if "description" in top else ""
    protocols = (c.choice(top["protocols"], "protocols", PROTOCOL_FAMILIES, "protocol families")
                 if "protocols" in top else None)
    kinds = _device_kinds(c, top["device_kinds"])
    bound = c.integer(top["max_devices"], "max_devices") if "max_devices" in top else MAX_DEVICES
    device_kinds = _devices(c, top["devices"], kinds, bound)
    entries = c.sequence(top["links"], "links", "a list of link patterns")

    builder = patterns.GraphBuilder(len(device_kinds))
    devs = builder.vertices[:]
    devices_per_node = None
    first_hierarchical = None
    for i, entry in enumerate(entries):
        path = f"links[{i}]"
        kind = _pattern_name(c, entry, path, PATTERN_KEYS)
        if kind == "hierarchical":
            if first_hierarchical is not None:
                c.fail(f"{path}.pattern", "at most one 'hierarchical' entry in links",
                       f"a second one (the first is {first_hierarchical})")
            first_hierarchical = path
            devices_per_node = _hierarchical(c, builder, entry, path, devs)
        else:
            optional = ("devices",) if kind in SUBSET_PATTERNS else ()
            spec = c.mapping(entry, path, PATTERN_KEYS[kind][0], PATTERN_KEYS[kind][1] + optional)
            subset = _subset(c, spec["devices"], f"{path}.devices", devs) if "devices" in spec else devs
            _flat_pattern(c, builder, kind, spec, path, subset, f"{path} ({kind})")

    devices = [Device(i, k, 0 if devices_per_node is None else i // devices_per_node, devs[i])
               for i, k in enumerate(device_kinds)]  # devs[i] is "dev<i>", one string for both
    one = builder.stated[0] if len(entries) == 1 and len(builder.stated) == 1 else None
    return Topology(name, source, devices, builder.links, builder.vertices, description,
                    protocols=protocols, in_network_reduction=builder.reductions, stated=one)


def _device_kinds(c: _Checker, value) -> dict[str, DeviceKind]:
    if not isinstance(value, Mapping) or not value:
        c.fail("device_kinds", "a non-empty mapping of kind names to kind specs", _show(value))
    kinds = {}
    for name, spec in value.items():
        path = f"device_kinds.{name}"
        c.string(name, path)
        spec = c.mapping(spec, path, KIND_REQUIRED)
        flops = c.mapping(spec["peak_flops"], f"{path}.peak_flops", (), DTYPES, DTYPE_ALIASES)
        if not flops:
            c.fail(f"{path}.peak_flops", f"at least one of the dtypes {sorted(DTYPES)}", _show(flops))
        kinds[name] = DeviceKind(
            name=name,
            memory_bytes=c.integer(spec["memory_bytes"], f"{path}.memory_bytes"),
            memory_bandwidth_GBps=c.number(spec["memory_bandwidth_GBps"],
                                           f"{path}.memory_bandwidth_GBps", positive=True),
            peak_flops={d: c.number(v, f"{path}.peak_flops.{d}", positive=True)
                        for d, v in flops.items()},
            launch_overhead_ns=c.number(spec["launch_overhead_ns"], f"{path}.launch_overhead_ns",
                                        positive=False),
        )
    return kinds


def _devices(c: _Checker, value, kinds: dict[str, DeviceKind], bound: int) -> list[DeviceKind]:
    """The kind of each device, in device-index order (at most ``bound`` devices)."""
    groups = c.sequence(value, "devices", "a list of {kind, count} entries")
    if not groups:
        c.fail("devices", "at least one {kind, count} entry", _show(value))
    out = []
    for i, group in enumerate(groups):
        path = f"devices[{i}]"
        group = c.mapping(group, path, DEVICE_REQUIRED)
        kind = c.choice(group["kind"], f"{path}.kind", kinds, "device kinds")
        count = c.integer(group["count"], f"{path}.count")
        if len(out) + count > bound:
            c.fail(f"{path}.count", f"at most {bound} devices in all (the sanity bound; set "
                                    f"max_devices: N at the top of the topology to raise it)",
                   f"{count} (bringing the total to {len(out) + count})")
        out += [kinds[kind]] * count
    return out


def _pattern_name(c: _Checker, entry, path: str, allowed) -> str:
    if not isinstance(entry, Mapping):
        c.fail(path, f"a mapping with a 'pattern' key (one of {sorted(allowed)})", _show(entry))
    if "pattern" not in entry:
        c.fail(f"{path}.pattern", f"the required key 'pattern' (one of {sorted(allowed)})",
               f"no such key (present: {sorted(map(str, entry))})")
    return c.choice(entry["pattern"], f"{path}.pattern", allowed, "patterns")


def _subset(c: _Checker, value, path: str, devs: list[str]) -> list[str]:
    indices = c.sequence(value, path, "a list of device indices")
    if not indices:
        c.fail(path, "at least one device index", _show(value))
    seen = set()
    for j, index in enumerate(indices):
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(devs):
            c.fail(f"{path}[{j}]", f"a device index in 0..{len(devs) - 1}", _show(index))
        if index in seen:
            c.fail(f"{path}[{j}]", "distinct device indices", f"{index} listed twice")
        seen.add(index)
    return [devs[i] for i in indices]


def _flat_pattern(c: _Checker, b: patterns.GraphBuilder, kind: str, spec: dict, path: str,
                  devs: list[str], origin: str) -> None:
    """Build one ring / fully_connected / switch / torus2d over ``devs`` (spec keys checked)."""
    link = patterns.LinkSpec(c.number(spec["bandwidth_GBps"], f"{path}.bandwidth_GBps", positive=True),
                             c.number(spec["latency_ns"], f"{path}.latency_ns", positive=False))
    if kind == "ring":
        bidirectional = c.boolean(spec.get("bidirectional", True), f"{path}.bidirectional")
        patterns.ring(b, devs, link, bidirectional, origin)
    elif kind == "fully_connected":
        patterns.fully_connected(b, devs, link, origin)
    elif kind == "switch":
        extra = c.number(spec.get("switch_latency_ns", 0), f"{path}.switch_latency_ns", positive=False)
        switch = patterns.switch(b, devs, link, extra, origin)
        if "in_network_reduction" in spec:
            b.reductions[switch] = _reduction(c, spec["in_network_reduction"],
                                              f"{path}.in_network_reduction")
    else:
        dims = c.sequence(spec["dims"], f"{path}.dims", "[rows, cols]")
        if len(dims) != 2:
            c.fail(f"{path}.dims", "[rows, cols] (two positive integers)", _show(spec["dims"]))
        rows = c.integer(dims[0], f"{path}.dims[0]")
        cols = c.integer(dims[1], f"{path}.dims[1]")
        if rows * cols != len(devs):
            c.fail(f"{path}.dims", f"rows * cols == {len(devs)} (the pattern's device count)",
                   f"{rows} * {cols} = {rows * cols}")
        patterns.torus2d(b, devs, link, rows, cols, origin)


def _reduction(c: _Checker, value, path: str) -> InNetworkReduction:
    spec = c.mapping(value, path, REDUCTION_REQUIRED)
    efficiency = c.number(spec["efficiency"], f"{path}.efficiency", positive=True)
    if efficiency > 1:
        c.fail(f"{path}.efficiency", "a number in (0, 1]", _show(spec["efficiency"]))
    return InNetworkReduction(efficiency, c.number(spec["latency_ns"], f"{path}.latency_ns",
                                                   positive=False))


def _hierarchical(c: _Checker, b: patterns.GraphBuilder, entry, path: str, devs: list[str]) -> int:
    """Build the hierarchical pattern over all devices; return ``devices_per_node``."""
    spec = c.mapping(entry, path, *PATTERN_KEYS["hierarchical"])
    nodes = c.integer(spec["nodes"], f"{path}.nodes")
    per_node = c.integer(spec["devices_per_node"], f"{path}.devices_per_node")
    if nodes * per_node != len(devs):
        c.fail(path, f"nodes * devices_per_node == {len(devs)} (the number of devices)",
               f"{nodes} * {per_node} = {nodes * per_node}")

    intra_path = f"{path}.intra"
    intra_kind = _pattern_name(c, spec["intra"], intra_path, INTRA_PATTERNS)
    intra = c.mapping(spec["intra"], intra_path, *PATTERN_KEYS[intra_kind])

    def lay_intra(builder, node_devs, origin):
        _flat_pattern(c, builder, intra_kind, intra, intra_path, node_devs,
                      f"{origin} ({intra_kind})")

    nic = c.mapping(spec["nic"], f"{path}.nic", NIC_REQUIRED, NIC_OPTIONAL)
    nic_link = patterns.LinkSpec(
        c.number(nic["bandwidth_GBps"], f"{path}.nic.bandwidth_GBps", positive=True),
        c.number(nic["latency_ns"], f"{path}.nic.latency_ns", positive=False))
    per_device = c.boolean(nic.get("per_device", True), f"{path}.nic.per_device")
    network = c.mapping(spec.get("network", {}), f"{path}.network", (), NETWORK_OPTIONAL)
    switch_latency = c.number(network.get("switch_latency_ns", 0),
                              f"{path}.network.switch_latency_ns", positive=False)
    patterns.hierarchical(b, devs, per_node, lay_intra, nic_link, per_device, switch_latency, path)
    return per_node


def load_file(path) -> Topology:
    """Read, validate and build the topology in the YAML file ``path`` (which must exist): a
    ``pathlib.Path`` or an ``importlib.resources`` Traversable (a bundled file)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(source, "(file)", "a readable UTF-8 YAML file", repr(exc)) from exc
    return parse_topology(read_yaml(text, source), source, default_name=Path(path.name).stem)
