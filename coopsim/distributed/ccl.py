"""coopsim/configs/ccl.yaml: the collective timing model and the algorithm for each collective."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import yaml

from coopsim.distributed.algorithms import COLLECTIVES, algorithms_for
from coopsim.distributed.algorithms.protocols import CHOICES, parse_protocols

MODELS = ("transfer", "analytic")
DEFAULT_CCL = files("coopsim.configs") / "ccl.yaml"  # a Traversable (docs/adr/0013)


class CclConfigError(ValueError):
    """A bad ccl setting: names the source, the key and what was expected."""


class CclConfig:
    """``model`` and, per collective, a list of ``(max_bytes or None, algorithm)`` rules;
    ``protocol`` (``"auto"``, a protocol name as ``NCCL_PROTO``, or ``"ideal"``: none even on
    topologies that declare ``protocols: nccl``) and ``protocols`` (name -> ``Protocol``)."""

    def __init__(self, model: str, rules: dict, source: str, protocol: str = "auto",
                 protocols: dict | None = None, nccl_only: dict | None = None):
        self.model = model
        self.rules = rules
        self.source = source
        self.protocol = protocol
        self.protocols = protocols or {}
        self.nccl_only = nccl_only or {}  # collective -> per rule: only where protocols: nccl

    def algorithm(self, collective: str, nbytes: int, multi_node: bool) -> str:
        """The algorithm of the first rule that admits ``nbytes`` (hierarchical only when the
        group spans several nodes)."""
        return self.algorithm_where(collective, nbytes, multi_node, True)

    def algorithm_where(self, collective: str, nbytes: int, multi_node: bool,
                        in_network_reduction: bool, nccl: bool = False) -> str:
        """``algorithm``, where ``nvls`` rules are skipped too unless the group's switch
        reduces in the network (``in_network_reduction``), and rules marked ``protocols: nccl``
        unless the topology runs NCCL's protocols (``nccl``)."""
        marks = self.nccl_only.get(collective) or [False] * len(self.rules[collective])
        for (max_bytes, algorithm), nccl_only in zip(self.rules[collective], marks):
            if (algorithm == "hierarchical" and not multi_node) or (
                    algorithm == "nvls" and not in_network_reduction) or (nccl_only and not nccl):
                continue
            if max_bytes is None or nbytes <= max_bytes:
                return algorithm
        return "ring"  # only skipped rules matched


def load_ccl(spec=None) -> CclConfig:
    """``spec``: None (coopsim/configs/ccl.yaml), a path, or a mapping merged over the default file."""
    if isinstance(spec, CclConfig):
        return spec
    base = _read(DEFAULT_CCL)
    source = str(DEFAULT_CCL)
    if spec is None:
        data = base
    elif isinstance(spec, dict):
        source = "RuntimeContext(ccl={...})"
        data = _merge(base, spec, source)
    elif isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise CclConfigError(f"ccl: expected a path to a YAML file or a mapping, got {str(spec)!r} (no such file)")
        source = str(path)
        data = _merge(base, _read(path), source)
    else:
        raise CclConfigError(f"ccl: expected None, a path or a mapping, got {spec!r}")
    return _parse(data, source)


def _merge(base: dict, override: dict, source: str) -> dict:
    """``override`` over ``base``; its ``algorithms`` replace base's per collective."""
    algorithms = override.get("algorithms", {})
    if not isinstance(algorithms, dict):
        raise CclConfigError(f"{source}: algorithms: expected a mapping collective -> algorithm "
                             f"or rules, got {algorithms!r}")
    return {**base, **override, "algorithms": {**base.get("algorithms", {}), **algorithms}}


# libyaml's parser when PyYAML has it: the same safe constructor and resolvers as
# ``yaml.safe_load``, 20x faster; every context reads ccl.yaml (~15 ms in Python; ADR-0036)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(), Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as e:
        raise CclConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise CclConfigError(f"{path}: expected a mapping with keys model and algorithms")
    return data


def _parse(data: dict, source: str) -> CclConfig:
    unknown = sorted(set(data) - {"model", "algorithms", "protocol", "protocols"})
    if unknown:
        raise CclConfigError(f"{source}: {unknown[0]}: unknown key; expected model, algorithms, "
                             f"protocol or protocols")
    protocol = data.get("protocol", "auto")
    if protocol not in CHOICES:
        raise CclConfigError(f"{source}: protocol: expected one of {', '.join(CHOICES)}, got {protocol!r}")

    def fail(message):
        raise CclConfigError(message)

    protocols = parse_protocols(data["protocols"], source, fail) if "protocols" in data else {}
    model = data.get("model", "transfer")
    if model not in MODELS:
        raise CclConfigError(f"{source}: model: expected one of {', '.join(MODELS)}, got {model!r}")
    algorithms = data.get("algorithms") or {}
    if not isinstance(algorithms, dict):
        raise CclConfigError(f"{source}: algorithms: expected a mapping collective -> algorithm")
    rules, nccl_only = {}, {}
    for collective in COLLECTIVES:
        if collective not in algorithms:
            raise CclConfigError(f"{source}: algorithms.{collective}: missing; expected one of "
                                 f"{', '.join(algorithms_for(collective))}")
    for collective, value in algorithms.items():
        key = f"algorithms.{collective}"
        if collective not in COLLECTIVES:
            raise CclConfigError(f"{source}: {key}: unknown collective; expected one of {', '.join(COLLECTIVES)}")
        entries = [{"algorithm": value}] if isinstance(value, str) else value
        if not isinstance(entries, list) or not entries:
            raise CclConfigError(f"{source}: {key}: expected an algorithm name or a list of rules, got {value!r}")
        parsed, marks = [], []
        for i, entry in enumerate(entries):
            where = f"{key}[{i}]"
            if not isinstance(entry, dict) or set(entry) - {"max_bytes", "algorithm", "protocols"}:
                raise CclConfigError(f"{source}: {where}: expected {{max_bytes: <int>, algorithm: <name>}} "
                                     f"(and optionally protocols: nccl), got {entry!r}")
            if entry.get("protocols", "nccl") != "nccl":
                raise CclConfigError(f"{source}: {where}.protocols: expected nccl (the rule then applies only "
                                     f"on topologies that run NCCL's protocols), got {entry['protocols']!r}")
            marks.append("protocols" in entry)
            algorithm = entry.get("algorithm")
            if algorithm not in algorithms_for(collective):
                raise CclConfigError(f"{source}: {where}.algorithm: expected one of "
                                     f"{', '.join(algorithms_for(collective))}, got {algorithm!r}")
            max_bytes = entry.get("max_bytes")
            if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
                raise CclConfigError(f"{source}: {where}.max_bytes: expected an int >= 0, got {max_bytes!r}")
            parsed.append((max_bytes, algorithm))
        if parsed[-1][0] is not None:
            raise CclConfigError(f"{source}: {key}: the last rule must have no max_bytes (it takes "
                                 f"the messages larger than every other rule's max_bytes)")
        rules[collective] = parsed
        nccl_only[collective] = marks
    return CclConfig(model, rules, source, protocol, protocols, nccl_only)
