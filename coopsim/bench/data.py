"""The bench's data: every rank's inputs, chosen so that every result is exact, and the
expected outputs that ``#wrong`` compares with (docs/adr/0010, "How #wrong is computed").

The expected values are computed here in numpy from the inputs alone, never by the simulator,
so that a wrong algorithm shows as a wrong element.
"""

from __future__ import annotations

import numpy as np

from coopsim.bench.options import Config
from coopsim.tensor.ops import round_bfloat16

_EXACT_INTEGERS = {"float": 2 ** 24, "half": 2 ** 11, "bfloat16": 2 ** 8,
                   "int32": 2 ** 31, "int64": 2 ** 63}


class Data:
    """Every rank's input pattern (small integers, int8) and the expected outputs.

    Values are chosen so that every partial result of the reduction, in any order, is an
    integer the dtype holds exactly: sum and avg draw from 0..m with n x m within the
    dtype's exact integers (ranks beyond that limit contribute 0); prod multiplies at most
    ten 2s and any number of -1s; min, max and the non-reducing collectives draw from
    -100..100. The expected values are computed in int64 from the patterns, then converted
    (avg: divided in float64 and rounded once to the dtype, as the simulation's one division).
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        n = cfg.nranks
        length = cfg.input_elements(cfg.sizes[-1])
        op = cfg.op if cfg.collective.reduces else None
        limit = _EXACT_INTEGERS[cfg.dtype]
        self.patterns = []
        for rank in range(n):
            rng = np.random.default_rng([2024, rank])
            if op in ("sum", "avg"):
                active = min(n, limit)
                high = min(9, limit // active)
                p = rng.integers(0, high + 1, length, dtype=np.int8)
                if rank >= active:
                    p[:] = 0
            elif op == "prod":
                draw = rng.integers(0, 8, length, dtype=np.int8)
                p = np.where(draw == 0, np.int8(-1), np.int8(1))
                if rank < 10:
                    p[draw == 1] = 2
            else:
                p = rng.integers(-100, 101, length, dtype=np.int8)
            self.patterns.append(p)
        self._expected: dict = {}

    def input(self, ctx, rank: int, n: int):
        """A tensor holding rank ``rank``'s first ``n`` input elements."""
        return ctx.tensor(self.patterns[rank][:n], dtype=self.cfg.dt(ctx))

    def input_in_output(self, ctx, rank: int, c: int):
        """In-place all_gather: an output of nranks x ``c`` zeros holding rank ``rank``'s ``c``
        input elements in its own chunk."""
        values = np.zeros(c * self.cfg.nranks, dtype=np.int8)
        values[rank * c:(rank + 1) * c] = self.patterns[rank][:c]
        return ctx.tensor(values, dtype=self.cfg.dt(ctx))

    def expected(self, size: int, rank: int):
        """What ``rank``'s output must hold after one collective of ``size``, or None if it is
        not checked. Cached per size (the cache holds one size at a time)."""
        key = (size, rank if self._per_rank() else None)
        if key not in self._expected:
            if self._expected and next(iter(self._expected))[0] != size:
                self._expected.clear()
            self._expected[key] = self._compute(size, rank)
        return self._expected[key]

    def _per_rank(self) -> bool:
        return self.cfg.collective.name in ("reduce_scatter", "alltoall", "sendrecv", "reduce")

    def _compute(self, size: int, rank: int):
        cfg, p, name = self.cfg, self.cfg.nranks, self.cfg.collective.name
        c = cfg.count(size)
        pat = self.patterns
        if name in ("all_reduce", "reduce"):
            if name == "reduce" and rank != cfg.root:
                return None
            return self._reduced([x[:c] for x in pat])
        if name == "reduce_scatter":
            return self._reduced([x[rank * c:(rank + 1) * c] for x in pat])
        if name == "broadcast":
            values = pat[cfg.root][:c]
        elif name == "all_gather":
            values = np.concatenate([x[:c] for x in pat])
        elif name == "alltoall":
            values = np.concatenate([x[rank * c:(rank + 1) * c] for x in pat])
        else:  # sendrecv
            values = pat[(rank - 1) % p][:c]
        return self._as_dtype(values.astype(np.int64))

    def _reduced(self, parts) -> np.ndarray:
        op = self.cfg.op
        acc = parts[0].astype(np.int64)
        for x in parts[1:]:
            if op in ("sum", "avg"):
                acc += x
            elif op == "prod":
                acc *= x
            elif op == "min":
                np.minimum(acc, x, out=acc)
            else:
                np.maximum(acc, x, out=acc)
        if op == "avg":
            if self.cfg.datatype.is_floating_point:
                return self._as_dtype(acc / len(parts))
            return self._as_dtype(acc // len(parts))
        return self._as_dtype(acc)

    def _as_dtype(self, values) -> np.ndarray:
        out = values.astype(self.cfg.datatype.numpy)
        if self.cfg.dtype == "bfloat16":
            round_bfloat16(out)
        return out
