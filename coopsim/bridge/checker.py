"""``crosscheck``: run one worker on coopsim and on real PyTorch, compare what each rank returns.

Both runs go through ``launch`` with the same ``dist_backend`` (torch's default, resolved once),
so ``fn`` sees the same ``get_backend()``. Values are compared after ``to_host``:
- tensors (``HostTensor``): same dtype, same shape, values within the dtype's tolerance —
  torch.testing's defaults (``torch/testing/_comparison.py``, ``_DTYPE_PRECISIONS``), integer
  dtypes exactly; ``rtol``/``atol`` override them for floating dtypes;
- numpy arrays: same dtype and shape, equal values;
- lists, tuples, dicts: same type and length (keys), element by element;
- dtypes by name, a ``torch.Size`` as a tuple (coopsim's ``shape``);
- anything else: ``==``.
Every difference is reported with its rank and where in the value it is (``[1]['loss']``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from coopsim.bridge.host import HostTensor
from coopsim.bridge.launcher import launch

# (rtol, atol) per dtype, as torch.testing.assert_close's defaults.
TOLERANCES = {
    "torch.float16": (1e-3, 1e-5),
    "torch.bfloat16": (1.6e-2, 1e-5),
    "torch.float32": (1.3e-6, 1e-5),
    "torch.float64": (1e-7, 1e-7),
}


class Difference(NamedTuple):
    rank: int
    where: str  # the path into the returned value, "" for the value itself
    what: str

    def __str__(self) -> str:
        return f"rank {self.rank}, value{self.where}: {self.what}"


class CrosscheckError(AssertionError):
    """coopsim and PyTorch disagree; ``differences`` lists every one, ``sim``/``torch`` hold
    what each rank returned on each side."""

    def __init__(self, differences, sim, torch):
        self.differences = list(differences)
        self.sim = sim
        self.torch = torch
        lines = "\n".join(f"  {d}" for d in self.differences)
        super().__init__(f"crosscheck: coopsim and PyTorch differ in {len(self.differences)} "
                         f"place(s):\n{lines}")


def crosscheck(fn, args=(), nprocs=1, *, topology=None, dist_backend=None, seed=0, timeout_s=60,
               rtol=None, atol=None, sim_options=None) -> list:
    """Run ``fn`` with ``launch`` on "sim" then on "torch"; return the per-rank results when
    they agree, else raise ``CrosscheckError`` naming every difference. ``timeout_s`` bounds
    the real-process run (``LaunchTimeout``)."""
    if dist_backend is None:
        from coopsim.bridge.processes import default_backend
        from coopsim.bridge.torch_like import import_torch

        dist_backend = default_backend(import_torch())
    sim = launch(fn, args, nprocs, "sim", topology, dist_backend=dist_backend, seed=seed,
                 sim_options=sim_options)
    real = launch(fn, args, nprocs, "torch", dist_backend=dist_backend, seed=seed, timeout_s=timeout_s)
    differences = compare(sim, real, rtol, atol)
    if differences:
        raise CrosscheckError(differences, sim, real)
    return sim


def compare(sim: list, real: list, rtol=None, atol=None) -> list[Difference]:
    """Every difference between two runs' per-rank results (see the module docstring)."""
    found = []
    for rank, (a, b) in enumerate(zip(sim, real)):
        for where, what in _differences(a, b, "", rtol, atol):
            found.append(Difference(rank, where, what))
    return found


def _plain(value):
    """What the two libraries return alike: a dtype (torch's or coopsim's) as its name
    ("torch.int64"), a ``torch.Size`` (torch's or coopsim's) as a tuple."""
    cls = type(value)
    library = cls.__module__.split(".")[0]
    if (library, cls.__name__) in (("torch", "dtype"), ("coopsim", "DType")):
        return repr(value)
    if (library, cls.__name__) in (("torch", "Size"), ("coopsim", "Size")):
        return tuple(value)
    return value


def _differences(a, b, where, rtol, atol):
    a, b = _plain(a), _plain(b)
    if isinstance(a, HostTensor) and isinstance(b, HostTensor):
        yield from _tensor_differences(a, b, where, rtol, atol)
    elif isinstance(a, (HostTensor, np.ndarray)) or isinstance(b, (HostTensor, np.ndarray)):
        if type(a) is not type(b):
            yield where, f"coopsim returned {_kind(a)}, PyTorch {_kind(b)}"
        elif a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b):
            yield where, f"arrays differ: coopsim {a!r}, PyTorch {b!r}"
    elif isinstance(a, (list, tuple, dict)) or isinstance(b, (list, tuple, dict)):
        yield from _container_differences(a, b, where, rtol, atol)
    elif not a == b:
        yield where, f"coopsim {a!r} != PyTorch {b!r}"


def _container_differences(a, b, where, rtol, atol):
    if type(a) is not type(b):
        yield where, f"coopsim returned {_kind(a)}, PyTorch {_kind(b)}"
    elif isinstance(a, dict):
        if list(a) != list(b):
            yield where, f"keys differ: coopsim {list(a)}, PyTorch {list(b)}"
        for key in (k for k in a if k in b):
            yield from _differences(a[key], b[key], f"{where}[{key!r}]", rtol, atol)
    elif len(a) != len(b):
        yield where, f"length differs: coopsim {len(a)}, PyTorch {len(b)}"
    else:
        for i, (x, y) in enumerate(zip(a, b)):
            yield from _differences(x, y, f"{where}[{i}]", rtol, atol)


def _tensor_differences(a: HostTensor, b: HostTensor, where, rtol, atol):
    if a.dtype != b.dtype:
        yield where, f"dtype differs: coopsim {a.dtype}, PyTorch {b.dtype}"
    elif a.values.shape != b.values.shape:
        yield where, f"shape differs: coopsim {list(a.values.shape)}, PyTorch {list(b.values.shape)}"
    else:
        default_rtol, default_atol = TOLERANCES.get(a.dtype, (0.0, 0.0))
        floating = a.dtype in TOLERANCES
        r = rtol if floating and rtol is not None else default_rtol
        t = atol if floating and atol is not None else default_atol
        close = np.isclose(a.values, b.values, rtol=r, atol=t, equal_nan=True)
        if not close.all():
            bad = np.argwhere(~close)
            first = tuple(int(i) for i in bad[0])
            yield where, (f"{len(bad)} of {close.size} {a.dtype} values differ beyond rtol={r:g}, "
                          f"atol={t:g}; first at index {list(first)}: coopsim "
                          f"{a.values[first]!r}, PyTorch {b.values[first]!r}")


def _kind(value) -> str:
    return f"a {type(value).__name__}"
