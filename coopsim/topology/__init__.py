"""YAML -> validated model of devices, links and routes.

``load_topology(spec)`` accepts:
- ``None``: the default bundled topology, ``DEFAULT_TOPOLOGY``;
- a ``Topology``: returned as is;
- a ``pathlib.Path`` (or any ``os.PathLike``), or a ``str`` that contains a path separator
  or ends in ``.yaml`` / ``.yml``: a YAML file;
- any other ``str``: the name of a bundled topology, ``coopsim/configs/topologies/<name>.yaml``;
- a mapping: an already-parsed spec (useful in tests and for generated topologies).

The bundled topologies are package data of ``coopsim.configs``, read with
``importlib.resources`` (so they are found from a checkout, an editable install and an
installed wheel alike; docs/adr/0013). The schema is in ``schema.py`` and
docs/adr/0003-topology-schema.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from coopsim.topology.errors import TopologyError
from coopsim.topology.model import DTYPES, Device, DeviceKind, Link, Topology
from coopsim.topology.schema import load_file, parse_topology

DEFAULT_TOPOLOGY = "small"

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
        return parse_topology(spec)
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and _looks_like_path(spec)):
        path = Path(spec)
        if not path.is_file():
            raise TopologyError(str(path), "topology",
                                f"an existing YAML file or a bundled topology name "
                                f"(bundled: {bundled_topologies()} in {configs_dir()})",
                                "a path that does not exist or is not a file")
        return load_file(path)
    if isinstance(spec, str):
        names = bundled_topologies()
        if spec not in names:
            raise TopologyError(spec, "topology",
                                f"one of the bundled topologies {names} (in {configs_dir()}) "
                                f"or a path to a YAML file", repr(spec))
        return load_file(configs_dir() / f"{spec}.yaml")
    raise TopologyError("<argument>", "topology",
                        "None, a bundled topology name, a path to a YAML file, a mapping or a "
                        "Topology", f"{spec!r} ({type(spec).__name__})")
