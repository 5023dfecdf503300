"""Collectives compiled into steps of transfers, and the pure-data reference executor (ADR-0008).

A ``Schedule`` is what an algorithm (ring, halving-doubling, trees, direct, hierarchical) makes
of one collective on ``p`` group-local ranks ``0..p-1``. It holds no data and no time: only
which slice of which buffer moves where, in which step.

Buffers. Every rank has three 1-D arrays, named by ``Xfer.src_buf`` / ``Xfer.dst_buf``:
``"in"`` (``in_count`` elements), ``"out"`` (``out_count``) and ``"tmp"`` (``tmp_count``, a
scratch buffer the executor allocates; only algorithms that must not write the user's input
use it). Offsets and counts are in elements.

- In-place collectives (all_reduce, broadcast, reduce): the executor passes one array as both
  "in" and "out", holding the rank's input at the start; schedules read and write only "out".
- For gather only the root's "out" exists; for scatter only the root's "in" is read.
- No schedule ever writes "in" (checked by ``Schedule``).

Semantics (normative; the timed executor follows them too):

- Steps are per-rank synchronous: rank r starts step k when it has finished step k-1, that is
  when all its sends of step k-1 are delivered and all its receives of step k-1 are applied.
- A transfer of step k takes a SNAPSHOT of its source slice when its src starts step k. It is
  APPLIED at dst once it has arrived and dst has started step k, so the receives of a step never
  overwrite data that the step still has to send.
- Applying: ``reduce=False``: ``dst[dst_off:dst_off+count] = payload``; ``reduce=True``:
  ``dst[...] = op(dst[...], payload)``. Within a step, the applications at one rank happen in
  the order the transfers are listed, so every summation order is fixed (C9).
- ``src == dst`` is a local copy or reduction on the device: it uses no link. Its snapshot is
  taken at the start of the step too, which lets a rank fold its own data in at a chosen place
  of the summation order.

Invariants every ``Schedule`` keeps (checked when it is built): ranks in ``0..p-1``, slices
inside their buffers, "in" never written, and at most one transfer per ordered pair of distinct
ranks in a step (a pair's data for one step travels as one message, which is what the timing
models charge for).
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

import numpy as np

BUFFERS = ("in", "out", "tmp")


@dataclass(frozen=True, slots=True)
class Xfer:
    """Move ``count`` elements from ``src``'s ``src_buf[src_off:]`` to ``dst``'s
    ``dst_buf[dst_off:]``, combining with ``op`` if ``reduce``."""

    src: int
    dst: int
    src_buf: str
    src_off: int
    dst_buf: str
    dst_off: int
    count: int
    reduce: bool


_CODES = {name: code for code, name in enumerate(BUFFERS)}
_FIELDS = ("src", "dst", "src_buf", "src_off", "dst_buf", "dst_off", "count", "reduce")


class Step:
    """Transfers that run concurrently; their order fixes the order of applications per rank.

    Stored as columns (ADR-0027): one 1-D numpy array per ``Xfer`` field, buffers as their
    index in ``BUFFERS``, so that an algorithm can build a step of p transfers with a few
    numpy operations and share arrays between steps. ``xfers`` makes the ``Xfer`` objects on
    first use and keeps them. A step is never changed after it is built: its arrays are
    read-only."""

    __slots__ = (*_FIELDS, "_xfers")

    def __init__(self, xfers=()):
        xfers = tuple(xfers)
        columns = tuple(zip(*map(attrgetter(*_FIELDS), xfers))) if xfers else ((),) * len(_FIELDS)
        src, dst, src_buf, src_off, dst_buf, dst_off, count, reduce = columns
        self._set(src, dst, [_CODES.get(b, -1) for b in src_buf], src_off,
                  [_CODES.get(b, -1) for b in dst_buf], dst_off, count, reduce)
        self._xfers = xfers

    @classmethod
    def of_columns(cls, src, dst, src_buf, src_off, dst_buf, dst_off, count, reduce):
        """A step from its columns (buffers as indices into ``BUFFERS``); scalars broadcast."""
        step = cls.__new__(cls)
        step._set(src, dst, src_buf, src_off, dst_buf, dst_off, count, reduce)
        step._xfers = None
        return step

    def _set(self, *columns) -> None:
        arrays = [np.asarray(c, dtype=bool if f == "reduce" else np.int64)
                  for f, c in zip(_FIELDS, columns)]
        n = max((a.size for a in arrays if a.ndim), default=0)
        for field, a in zip(_FIELDS, arrays):
            a = np.broadcast_to(a, (n,)) if a.ndim == 0 else a
            if a.shape != (n,):
                raise ValueError(f"step column {field!r} has shape {a.shape}, expected ({n},)")
            a.flags.writeable = False
            setattr(self, field, a)

    def __len__(self) -> int:
        return self.src.size

    @property
    def xfers(self) -> tuple[Xfer, ...]:
        if self._xfers is None:
            self._xfers = self._made(slice(None))
        return self._xfers

    def _made(self, at) -> tuple[Xfer, ...]:
        """The ``Xfer`` objects of the transfers ``at`` (an index or slice of the columns)."""
        return tuple(map(Xfer, self.src[at].tolist(), self.dst[at].tolist(),
                         [BUFFERS[b] for b in self.src_buf[at].tolist()], self.src_off[at].tolist(),
                         [BUFFERS[b] for b in self.dst_buf[at].tolist()], self.dst_off[at].tolist(),
                         self.count[at].tolist(), self.reduce[at].tolist()))

    def carrying(self) -> list[Xfer]:
        """The transfers that carry elements (``count > 0``), in listed order, made from the
        columns without making the others (a tiny collective's steps are mostly empty)."""
        if self._xfers is not None:
            return [x for x in self._xfers if x.count]
        return list(self._made(np.flatnonzero(self.count)))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Step):
            return NotImplemented
        return all(np.array_equal(getattr(self, f), getattr(other, f)) for f in _FIELDS)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, f).tobytes() for f in _FIELDS))

    def __repr__(self) -> str:
        return f"Step({self.xfers!r})"


@dataclass(frozen=True, slots=True)
class Schedule:
    """One collective on ``p`` ranks as ``steps``; ``root`` is None for unrooted collectives.

    ``in_count``/``out_count``/``tmp_count`` are the element counts of each rank's buffers
    (for gather ``out_count`` is the root's; for scatter ``in_count`` is the root's)."""

    collective: str
    algorithm: str
    p: int
    steps: tuple[Step, ...]
    in_count: int
    out_count: int
    root: int | None
    tmp_count: int = 0

    def __post_init__(self) -> None:
        _check(self)


_PROBLEMS = ("rank out of range", "bad buffer (read in/out/tmp, write out/tmp)",
             "negative size or offset", "slice outside its buffer", "two transfers between one pair")


def _check(s: Schedule) -> None:
    """Raise for the first bad transfer (in step order, then listed order), naming its first
    problem. A step passes a quick test of whole columns first; only a step that fails it is
    checked transfer by transfer. Steps often share column arrays (every ring step has the
    same senders and receivers), so the quick test checks each shared array once."""
    if s.p < 1:
        raise ValueError(f"a schedule needs p >= 1 ranks, got {s.p}")
    sizes = np.array([s.in_count, s.out_count, s.tmp_count, -1], dtype=np.int64)
    writable = np.array([-1, s.out_count, s.tmp_count, -1], dtype=np.int64)
    # id of a column array -> its verdict or buffer sizes. Only a memo for this call: the
    # steps keep every array alive meanwhile, so an id names one array and no result depends
    # on id values (C9).
    known: dict = {}
    for k, step in enumerate(s.steps):
        if not len(step) or _quick(step, s.p, sizes, writable, known):
            continue
        masks = _problems(step, s.p, sizes, writable)
        at = int(np.logical_or.reduce(masks).argmax())
        problem = next(name for name, mask in zip(_PROBLEMS, masks) if mask[at])
        raise ValueError(f"{problem} in {s.collective}/{s.algorithm} p={s.p} "
                         f"step {k}: {_describe(step, at)}")


def _once(known: dict, key, compute):
    if key not in known:
        known[key] = compute()
    return known[key]


def _quick(step: Step, p: int, sizes, writable, known: dict) -> bool:
    """True only if no transfer of ``step`` has a problem (a sufficient test, whole columns)."""
    src, dst, count = step.src, step.dst, step.count
    if not (_once(known, ("rank", id(src)), lambda: 0 <= src.min() and src.max() < p)
            and _once(known, ("rank", id(dst)), lambda: 0 <= dst.min() and dst.max() < p)):
        return False
    src_size = _once(known, ("read", id(step.src_buf)), lambda: sizes[np.clip(step.src_buf, -1, 3)])
    dst_size = _once(known, ("write", id(step.dst_buf)), lambda: writable[np.clip(step.dst_buf, -1, 3)])
    if not (count.min() >= 0 and step.src_off.min() >= 0 and step.dst_off.min() >= 0
            and (step.src_off + count <= src_size).all() and (step.dst_off + count <= dst_size).all()):
        return False  # also catches unknown buffers: their size is -1

    def distinct_pairs():
        keys = (src * p + dst)[src != dst]
        return keys.size < 2 or (keys[1:] > keys[:-1]).all() or np.unique(keys).size == keys.size

    return _once(known, ("pairs", id(src), id(dst)), distinct_pairs)


def _problems(step: Step, p: int, sizes, writable) -> list:
    """One boolean array per entry of ``_PROBLEMS``, over the step's transfers; a transfer's
    problem is the first mask that holds at its index."""
    src, dst, src_buf, dst_buf = step.src, step.dst, step.src_buf, step.dst_buf
    ranks = (src < 0) | (src >= p) | (dst < 0) | (dst >= p)
    src_known = (src_buf >= 0) & (src_buf < 3)
    dst_known = (dst_buf == 1) | (dst_buf == 2)
    buffers = ~ranks & ~(src_known & dst_known)
    fine = ~ranks & ~buffers
    negative = fine & ((step.count < 0) | (step.src_off < 0) | (step.dst_off < 0))
    fine &= ~negative
    outside = fine & ((step.src_off + step.count > sizes[np.where(src_known, src_buf, 3)])
                      | (step.dst_off + step.count > writable[np.where(dst_known, dst_buf, 3)]))
    fine &= ~outside
    keys = np.where(fine & (src != dst), src * p + dst, -1 - np.arange(len(step)))  # -k: no pair
    order = np.argsort(keys, kind="stable")
    repeated = np.zeros(len(step), dtype=bool)
    repeated[order[1:]] = keys[order[1:]] == keys[order[:-1]]
    return [ranks, buffers, negative, outside, repeated]


def _describe(step: Step, i: int) -> str:
    """Transfer ``i`` of ``step`` as an ``Xfer`` repr (an unknown buffer by its number)."""
    if step._xfers is not None:
        return repr(step._xfers[i])
    values = {f: getattr(step, f)[i].item() for f in _FIELDS}
    for f in ("src_buf", "dst_buf"):
        values[f] = BUFFERS[values[f]] if 0 <= values[f] < len(BUFFERS) else values[f]
    return "Xfer(" + ", ".join(f"{f}={v!r}" for f, v in values.items()) + ")"


def make_schedule(collective, algorithm, p, steps, in_count, out_count, root=None, tmp_count=0):
    """A ``Schedule`` from lists of transfers or ``Step`` objects; empty steps are dropped."""
    steps = (xfers if isinstance(xfers, Step) else Step(xfers) for xfers in steps)
    kept = tuple(step for step in steps if len(step))
    return Schedule(collective, algorithm, p, kept, in_count, out_count, root, tmp_count)


def parallel(*step_lists):
    """Run several lists of steps side by side: step k is the union of their steps k."""
    merged = []
    for steps in step_lists:
        for k, xfers in enumerate(steps):
            if k == len(merged):
                merged.append([])
            merged[k].extend(xfers)
    return merged


def chunks(n: int, p: int) -> list[tuple[int, int]]:
    """Split ``n`` elements into ``p`` contiguous ``(offset, count)`` chunks, in order, whose
    counts differ by at most one: the first ``n % p`` chunks are one element longer."""
    if p < 1 or n < 0:
        raise ValueError(f"chunks needs n >= 0 and p >= 1, got n={n}, p={p}")
    base, extra = divmod(n, p)
    out, off = [], 0
    for i in range(p):
        count = base + (i < extra)
        out.append((off, count))
        off += count
    return out


def run_schedule(schedule: Schedule, in_bufs, out_bufs, op) -> None:
    """Apply ``schedule`` to the ranks' arrays, exactly by the semantics above, with no time.

    Each step first snapshots the source slices of all its transfers, then applies them in the
    listed order. ``op`` is a binary ufunc-like (``np.add``, ``np.minimum``, ...). "tmp" buffers
    are allocated here (zeros of the rank's "in" dtype)."""
    p = schedule.p
    if len(in_bufs) != p or len(out_bufs) != p:
        raise ValueError(f"{schedule.collective} on {p} ranks needs {p} in and out buffers, "
                         f"got {len(in_bufs)} and {len(out_bufs)}")
    bufs = [{"in": in_bufs[r], "out": out_bufs[r],
             "tmp": np.zeros(schedule.tmp_count, dtype=in_bufs[r].dtype)} for r in range(p)]
    for step in schedule.steps:
        for x in step.xfers:
            for rank, name, end in ((x.src, x.src_buf, x.src_off + x.count),
                                    (x.dst, x.dst_buf, x.dst_off + x.count)):
                if len(bufs[rank][name]) < end:
                    raise ValueError(f"rank {rank}'s {name!r} buffer has "
                                     f"{len(bufs[rank][name])} elements, {x} needs {end}")
    for step in schedule.steps:
        payloads = [bufs[x.src][x.src_buf][x.src_off:x.src_off + x.count].copy()
                    for x in step.xfers]
        for x, payload in zip(step.xfers, payloads):
            target = bufs[x.dst][x.dst_buf]
            lo, hi = x.dst_off, x.dst_off + x.count
            target[lo:hi] = op(target[lo:hi], payload) if x.reduce else payload
