"""YAML -> validated model of devices, links and routes.

``load_topology(spec)`` accepts:
- ``None``: the default bundled topology, ``DEFAULT_TOPOLOGY``;
- a ``Topology``: returned as is;
- a ``pathlib.Path`` (or any ``os.PathLike``), or a ``str`` that contains a path separator
  or ends in ``.yaml`` / ``.yml``: a YAML file;
- any other ``str``: the name of a bundled topology, ``coopsim/configs/topologies/<name>.yaml``;
- a mapping: an already-parsed spec (useful in tests and for generated topologies).

A topology is immutable, so one parsed spec serves every context that loads the same config:
``load_topology`` keeps the last ``SHARED`` topologies it built, keyed by the file (its path,
size and modification time) or by the canonical JSON text of a mapping
(docs/adr/0030-ranks-at-scale.md) — a memo of a pure function, which changes no result.

The bundled topologies are package data of ``coopsim.configs``, read with
``importlib.resources`` (so they are found from a checkout, an editable install and an
installed wheel alike; docs/adr/0013). The schema is in ``schema.py`` and
docs/adr/0003-topology-schema.md.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from coopsim.topology.errors import TopologyError
from coopsim.topology.model import DTYPES, Device, DeviceKind, Link, Topology
from coopsim.topology.schema import load_file, parse_topology

DEFAULT_TOPOLOGY = "small"
SHARED = 8  # parsed topologies kept for the next context that loads the same config
_shared: OrderedDict = OrderedDict()  # key -> Topology, least recently used first

__all__ = [
    "DEFAULT_TOPOLOGY",
    "DTYPES",
    "Device",
    "DeviceKind",
    "Link",
    "Topology",
    "TopologyError",
    "bundled_topologies",
    "configs_dir",
    "load_topology",
    "parse_topology",
]


def configs_dir() -> Traversable:
    """The folder of the bundled topology YAML files, ``coopsim/configs/topologies`` in the
    installed package (a ``pathlib.Path`` whenever the package is installed as files; copy a
    file from there to start your own)."""
    return files("coopsim.configs") / "topologies"


def bundled_topologies() -> list[str]:
    """Sorted names (file stems) of the bundled topologies."""
    return sorted(p.name[:-len(".yaml")] for p in configs_dir().iterdir()
                  if p.name.endswith(".yaml"))


def _looks_like_path(spec: str) -> bool:
    separators = [s for s in (os.sep, os.altsep, "/") if s]
    return any(s in spec for s in separators) or spec.endswith((".yaml", ".yml"))


def load_topology(spec=None) -> Topology:
    """Return the ``Topology`` for ``spec`` (see the module docstring for what it may be).

    Raises ``TopologyError`` for an unknown bundled name or a missing file (the message
    lists the bundled names) and for any invalid spec.
    """
    if isinstance(spec, Topology):
        return spec
    if spec is None:
        spec = DEFAULT_TOPOLOGY
    if isinstance(spec, Mapping):
        return _share(_mapping_key(spec), lambda: parse_topology(spec))
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and _looks_like_path(spec)):
        path = Path(spec)
        if not path.is_file():
            raise TopologyError(str(path), "topology",
                                f"an existing YAML file or a bundled topology name "
                                f"(bundled: {bundled_topologies()} in {configs_dir()})",
                                "a path that does not exist or is not a file")
        return _share(_file_key(path), lambda: load_file(path))
    if isinstance(spec, str):
        names = bundled_topologies()
        if spec not in names:
            raise TopologyError(spec, "topology",
                                f"one of the bundled topologies {names} (in {configs_dir()}) "
                                f"or a path to a YAML file", repr(spec))
        bundled = configs_dir() / f"{spec}.yaml"
        key = _file_key(bundled) if isinstance(bundled, Path) else None
        return _share(key, lambda: load_file(bundled))
    raise TopologyError("<argument>", "topology",
                        "None, a bundled topology name, a path to a YAML file, a mapping or a "
                        "Topology", f"{spec!r} ({type(spec).__name__})")


def _file_key(path: Path):
    stat = path.stat()
    return ("file", str(path), str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _mapping_key(spec):
    """The canonical JSON text of ``spec`` if it is plain data that JSON keeps exactly (str
    keys, lists, numbers, bools, strings), else None (such a spec is parsed every time)."""
    try:
        text = json.dumps(spec, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return ("mapping", text) if json.loads(text) == spec else None


def _share(key, parse) -> Topology:
    """The topology kept under ``key``, else ``parse()`` kept (None: not kept)."""
    if key is None:
        return parse()
    topology = _shared.get(key)
    if topology is None:
        topology = _shared[key] = parse()
        while len(_shared) > SHARED:
            _shared.popitem(last=False)
    _shared.move_to_end(key)
    return topology
