"""The bench's data: every rank's input, chosen so that every result is exact, and the
expected outputs that ``#wrong`` compares with (docs/adr/0010, "How #wrong is computed";
docs/adr/0028-main-job-memory.md).

Rank r's input repeats its pattern: element i is ``patterns[r][i % period]``, one period of
small integers (int8). So every expected output is, piece after piece, one of a few arrays
of one period read from some phase (``Piece``), and nothing of a buffer's length is ever made
on the host: ``count_wrong`` compares a live output with its pieces. The period is a prime, so
that no chunk or slice boundary of the collectives' schedules falls on it; buffers up to a
period long are not periodic at all.

The expected values are computed here in numpy from the patterns alone, never by the simulator,
so that a wrong algorithm shows as a wrong element.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from coopsim.bench.options import Config
from coopsim.tensor.ops import round_bfloat16

PERIOD = 1_000_003  # elements of a pattern (a prime; fewer when the largest input is shorter)
_ROWS = 8  # periods compared at once: bounds the comparison's temporary
_EXACT_INTEGERS = {"float": 2 ** 24, "half": 2 ** 11, "bfloat16": 2 ** 8,
                   "int32": 2 ** 31, "int64": 2 ** 63}


class Piece(NamedTuple):
    """``length`` elements that must equal ``values`` (one period, in the benchmark's type)
    repeated, starting at ``values[phase]``."""

    length: int
    values: np.ndarray
    phase: int


def checks_rank(cfg: Config, rank: int) -> bool:
    """True if ``rank``'s output is checked: every rank's, but reduce's root only."""
    return cfg.collective.name != "reduce" or rank == cfg.root


class Data:
    """Every rank's pattern (``patterns[rank]``: one period, int8) and the expected outputs.

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
        self.period = min(PERIOD, max(1, cfg.input_elements(cfg.sizes[-1])))
        op = cfg.op if cfg.collective.reduces else None
        limit = _EXACT_INTEGERS[cfg.dtype]
        self.patterns = []
        for rank in range(n):
            rng = np.random.default_rng([2024, rank])
            if op in ("sum", "avg"):
                active = min(n, limit)
                high = min(9, limit // active)
                p = rng.integers(0, high + 1, self.period, dtype=np.int8)
                if rank >= active:
                    p[:] = 0
            elif op == "prod":
                draw = rng.integers(0, 8, self.period, dtype=np.int8)
                p = np.where(draw == 0, np.int8(-1), np.int8(1))
                if rank < 10:
                    p[draw == 1] = 2
            else:
                p = rng.integers(-100, 101, self.period, dtype=np.int8)
            self.patterns.append(p)
        self._values: dict = {}  # rank -> its pattern in the benchmark's type; None -> reduced

    def expected(self, size: int, rank: int) -> list[Piece] | None:
        """What ``rank``'s output must hold after one collective of ``size``, piece after
        piece, or None if it is not checked."""
        cfg, p, name = self.cfg, self.cfg.nranks, self.cfg.collective.name
        c = cfg.count(size)
        if not checks_rank(cfg, rank):
            return None
        if name in ("all_reduce", "reduce"):
            return [Piece(c, self._of(None), 0)]
        if name == "reduce_scatter":
            return [Piece(c, self._of(None), rank * c % self.period)]
        if name == "broadcast":
            return [Piece(c, self._of(cfg.root), 0)]
        if name == "all_gather":
            return [Piece(c, self._of(j), 0) for j in range(p)]
        if name == "alltoall":
            return [Piece(c, self._of(j), rank * c % self.period) for j in range(p)]
        return [Piece(c, self._of((rank - 1) % p), 0)]  # sendrecv: from rank-1

    def _of(self, rank):
        """Rank ``rank``'s pattern in the benchmark's type; None: the reduction of all."""
        if rank not in self._values:
            self._values[rank] = (self._reduced() if rank is None
                                  else self._as_dtype(self.patterns[rank].astype(np.int64)))
        return self._values[rank]

    def _reduced(self) -> np.ndarray:
        op = self.cfg.op
        acc = self.patterns[0].astype(np.int64)
        for x in self.patterns[1:]:
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
                return self._as_dtype(acc / len(self.patterns))
            return self._as_dtype(acc // len(self.patterns))
        return self._as_dtype(acc)

    def _as_dtype(self, values) -> np.ndarray:
        out = values.astype(self.cfg.datatype.numpy)
        if self.cfg.dtype == "bfloat16":
            round_bfloat16(out)
        return out


def count_wrong(got: np.ndarray, pieces: list[Piece]) -> int:
    """Elements of the 1-D array ``got`` that differ from ``pieces`` laid end to end."""
    wrong, start = 0, 0
    for length, values, phase in pieces:
        wrong += _differ(got[start:start + length], values, phase)
        start += length
    return wrong


def _differ(got: np.ndarray, values: np.ndarray, phase: int) -> int:
    """Elements of ``got`` that differ from ``values`` repeated from ``values[phase]``."""
    period = values.size
    head = min(got.size, period - phase)
    wrong = np.count_nonzero(got[:head] != values[phase:phase + head])
    rest = got[head:]
    whole = rest.size // period
    for lo in range(0, whole, _ROWS):
        rows = rest[lo * period:min(lo + _ROWS, whole) * period].reshape(-1, period)
        wrong += np.count_nonzero(rows != values)
    tail = rest[whole * period:]
    return int(wrong + np.count_nonzero(tail != values[:tail.size]))
