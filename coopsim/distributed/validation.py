"""Argument checks of the torch.distributed calls, with ``ReduceOp``.

Every check runs on the host at the call, in the calling rank, and raises what PyTorch
raises there (``torch/distributed/distributed_c10d.py``), so that nothing invalid reaches
the rendezvous or the engine.
"""

from __future__ import annotations

import datetime

import numpy as np

from coopsim.distributed.tables import IN_PLACE, KIND
from coopsim.tensor.ops import flat
from coopsim.errors import format_ranks

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)  # gloo's default, as torch.distributed


class _RedOp:
    __slots__ = ("name", "value")

    def __init__(self, name: str, value: int):
        self.name, self.value = name, value

    def __repr__(self) -> str:
        return f"<RedOpType.{self.name}: {self.value}>"

    def __str__(self) -> str:
        return f"RedOpType.{self.name}"  # as torch's (pybind11 enum) str


class ReduceOp:
    """``torch.distributed.ReduceOp``."""

    SUM = _RedOp("SUM", 0)
    AVG = _RedOp("AVG", 1)
    PRODUCT = _RedOp("PRODUCT", 2)
    MIN = _RedOp("MIN", 3)
    MAX = _RedOp("MAX", 4)
    BAND = _RedOp("BAND", 5)
    BOR = _RedOp("BOR", 6)
    BXOR = _RedOp("BXOR", 7)


def reduce_op_name(op, tensor) -> str:
    """The name of ``op`` (a ``ReduceOp``), checked against ``tensor``'s dtype."""
    if not isinstance(op, _RedOp):
        raise ValueError(f"op must be a ctx.distributed.ReduceOp, got {op!r}")
    if op.name in ("BAND", "BOR", "BXOR") and tensor.dtype.is_floating_point:
        raise ValueError(f"Cannot use ReduceOp.{op.name} with {tensor.dtype}")
    return op.name


def inplace(tensor, what: str) -> np.ndarray:
    """``flat(tensor, what)`` for an in-place collective's one buffer: a 1-D contiguous
    tensor's own array (no new view per call), any other tensor's flat view."""
    array = getattr(tensor, "_array", None)
    if type(array) is np.ndarray and array.ndim == 1 and array.flags.c_contiguous and hasattr(tensor, "_storage"):
        return array
    return flat(tensor, what)


def same_dtype(a, b, what) -> None:
    if a.dtype is not b.dtype:
        raise TypeError(f"{what}: output and input must have the same dtype, got {a.dtype} and {b.dtype}")


def tensor_list(tensors, like, what, name) -> None:
    """``tensors`` is a list of contiguous tensors of ``like``'s dtype and element count."""
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{what}: {name} must be a list of tensors, got {type(tensors).__name__}")
    for t in tensors:
        flat(t, what)
        if t.dtype is not like.dtype or t.numel() != like.numel():
            raise ValueError(f"{what}: every tensor of {name} must have {like.numel()} elements of "
                             f"{like.dtype}, got {t.numel()} of {t.dtype}")


def uneven(tensors) -> bool:
    """Is ``tensors`` a list of tensors of different sizes? (PyTorch runs the list forms of
    all_gather, reduce_scatter and all_to_all on such lists: ``coopsim.distributed.uneven``.)"""
    if not isinstance(tensors, (list, tuple)):
        return False
    return len({t._array.size for t in tensors if hasattr(t, "_array")}) > 1


def root_member(group, root, what) -> int:
    """The group rank of the root given as ``(global rank, group rank)``, exactly one set.

    Messages and types as ``_canonicalize_group_rank`` in torch/distributed/distributed_c10d.py
    (ValueError for none or both); a root that is not an int is a TypeError naming it (torch's
    C++ binding refuses it, far from the call)."""
    rank, group_rank = root
    if group_rank is not None and rank is not None:
        raise ValueError("Can't specify both group_rank and global_rank")
    if group_rank is None and rank is None:
        raise ValueError("Must specify global_rank or group_rank")
    side = "src" if what in ("broadcast", "scatter") else "dst"
    for name, value in ((side, rank), (f"group_{side}", group_rank)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{what}: {name} must be an int (a {'group' if 'group' in name else 'global'} "
                            f"rank), got {value!r} ({type(value).__name__})")
    if group_rank is not None:
        if not 0 <= group_rank < group.size:
            raise ValueError(f"{what}: group rank {group_rank} is not in 0..{group.size - 1}")
        return group_rank
    member = group.member(rank)
    if member < 0:
        raise ValueError(f"{what}: rank {rank} is not part of group {group.name} (ranks {list(group.ranks)})")
    return member


def member(group, rank: int, what: str) -> int:
    """The calling ``rank``'s group rank in ``group``; a group object used by a rank outside
    it is an error naming both (torch never hands a non-member the object: ``new_group``
    returns ``GroupMember.NON_GROUP_MEMBER`` to it)."""
    m = group.member(rank)
    if m < 0:
        raise ValueError(f"{what}: rank {rank} is not a member of group {group.name} "
                         f"(ranks {format_ranks(group.ranks)}); a rank outside a group gets "
                         f"GroupMember.NON_GROUP_MEMBER from new_group and passes that")
    return m


def own_tensors(rt, tensors, what: str) -> None:
    """Every tensor lives on this runtime's devices (not on another RuntimeContext's)."""
    for t in tensors:
        if t._storage.rt is not rt:
            raise RuntimeError(f"{what}: this tensor belongs to another RuntimeContext; create "
                               f"the tensors a rank uses with the context that spawned it")


def device_of(rt, tensors, what: str):
    """The one device of ``tensors`` (this runtime's; the calling rank's current device when
    there are none)."""
    if not tensors:
        return rt.current_device()
    own_tensors(rt, tensors, what)
    first = tensors[0]._storage.device
    if any(t._storage.device is not first for t in tensors):
        devices = sorted({t._storage.device.index for t in tensors})
        raise ValueError(f"{what}: all tensors must be on one device, got cuda:{devices}")
    return rt.devices[first.index]


def sizes(what, p: int, ins, outs, list_len, in_multiple: bool, out_multiple: bool, uneven: bool) -> None:
    """The element counts of a collective's buffers agree with the group size ``p``."""
    if list_len is not None and list_len != p:
        raise ValueError(f"{what}: the tensor list must have {p} tensors (the group size), got {list_len}")
    if in_multiple and not uneven and ins.size % p:
        raise ValueError(f"{what}: input of {ins.size} elements does not divide among {p} ranks")
    if out_multiple and outs.size != ins.size * p:
        raise ValueError(f"{what}: output must have group size x input elements "
                         f"({p} x {ins.size}), got {outs.size}")
    if what == "reduce_scatter_single" and outs.size * p != ins.size:
        raise ValueError(f"{what}: input must have group size x output elements "
                         f"({p} x {outs.size}), got {ins.size}")


def splits(given, n_in, n_out, p, what):
    """``all_to_all_single``'s (input, output) split sizes, defaulted to even and checked."""
    split_in, split_out = given
    split_in = split_in or [n_in // p] * p
    split_out = split_out or [n_out // p] * p
    for name, s, n in (("input_split_sizes", split_in, n_in), ("output_split_sizes", split_out, n_out)):
        if len(s) != p or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in s) or sum(s) != n:
            raise ValueError(f"{what}: {name} must be {p} non-negative ints summing to {n}, got {s}")
    return split_in, split_out


def count(what, ins, outs, p) -> int:
    """Per-rank element count in ``build_schedule``'s terms."""
    kind = KIND[what]
    if kind in IN_PLACE or kind in ("all_gather", "gather"):
        return ins.size
    if kind in ("reduce_scatter", "scatter"):
        return outs.size
    return ins.size // p  # all_to_all


def timeout_ns(timeout, what) -> float:
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds() * 1e9
    raise TypeError(f"{what}: timeout must be a datetime.timedelta, got {timeout!r}")
