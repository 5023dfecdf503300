"""Planning: how a collective whose members have all arrived will run.

``Planner.plan`` picks the algorithm (ccl.yaml's rules), builds or reuses its schedule, and
derives the cost inputs from the topology: ``alpha``/``beta`` of the slowest route between
ring neighbours, ``gamma`` of a reduction (3 bytes of memory traffic per byte). The result is
a ``Plan``, which the execution module runs.
"""

from __future__ import annotations

import numpy as np

from coopsim.distributed.algorithms import build_schedule
from coopsim.distributed.algorithms.schedule import Xfer, make_schedule
from coopsim.distributed.execution import Compiled
from coopsim.distributed.tables import IN_PLACE, KIND, ROOTED

UFUNCS = {"SUM": np.add, "AVG": np.add, "PRODUCT": np.multiply, "MIN": np.minimum,
          "MAX": np.maximum, "BAND": np.bitwise_and, "BOR": np.bitwise_or, "BXOR": np.bitwise_xor}


class Plan:
    """How a collective runs: the schedule or formula inputs and the reduction."""

    __slots__ = ("collective", "algorithm", "schedule", "nbytes", "itemsize", "ufunc", "post",
                 "root", "nodes", "devices", "alpha_ns", "beta_ns_per_byte", "gamma_ns_per_byte")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))


class Planner:
    """Plans the collectives of one spawn; schedules and their compiled tables are cached
    per collective shape, so a loop of identical collectives builds them once."""

    def __init__(self, rt, ccl):
        self.rt = rt
        self.ccl = ccl
        self._schedules: dict = {}  # build_schedule's arguments -> Schedule
        self._compiled: dict = {}  # id(Schedule) -> Compiled (TimedRun's tables for it)

    def compiled(self, schedule) -> Compiled:
        """``TimedRun``'s tables for ``schedule``, built once per schedule."""
        compiled = self._compiled.get(id(schedule))
        if compiled is None or compiled.schedule is not schedule:
            compiled = self._compiled[id(schedule)] = Compiled(schedule)
        return compiled

    def plan(self, arrivals) -> Plan | None:
        """How the collective of ``arrivals`` (every member's, in member order) runs; None
        when nothing moves (one rank, or no data): then every output is set here."""
        fp = arrivals[0].fingerprint
        p = len(arrivals)
        kind = KIND[fp["op"]]
        dtype = fp["dtype_obj"]
        count = fp["count"]
        splits_in = fp.get("splits_in")
        moves = any(any(a.fingerprint["splits_in"]) for a in arrivals) if splits_in is not None else count
        if p == 1 or not moves:
            _single_rank(arrivals)
            return None
        itemsize = dtype.itemsize
        nbytes = (count if kind in IN_PLACE else count * p) * itemsize
        if splits_in is not None:  # uneven all_to_all: the formula's n is the largest rank's total
            nbytes = max(sum(a.fingerprint["splits_in"]) for a in arrivals) * itemsize
        devices = [a.fingerprint["device"] for a in arrivals]
        topology = self.rt.topology
        nodes = [topology.devices[d].node for d in devices]
        multi_node = len(set(nodes)) > 1
        algorithm = self.ccl.algorithm(kind, nbytes, multi_node)
        if algorithm == "hierarchical" and not _equal_nodes(nodes):
            algorithm = self.ccl.algorithm(kind, nbytes, False)
        root = fp["root_member"]
        alpha, beta = self._alpha_beta(devices)
        device = self.rt.devices[devices[0]]
        gamma = 3.0 / device.kind.memory_bandwidth_GBps  # a reduction reads 2 and writes 1 byte
        reduce_op = fp["reduce_op"]
        post = None
        if reduce_op == "AVG":
            post = (lambda a: a / p) if dtype.is_floating_point else (lambda a: _truncating_div(a, p))
        ufunc = UFUNCS[reduce_op] if reduce_op else np.add
        schedule = None
        if self.ccl.model == "transfer":
            if splits_in is not None:
                schedule = _uneven_all_to_all(arrivals)
            else:
                key = (kind, algorithm, p, count, root if kind in ROOTED else None,
                       tuple(nodes) if algorithm == "hierarchical" else None)
                schedule = self._schedules.get(key)
                if schedule is None:
                    schedule = self._schedules[key] = build_schedule(*key[:5], key[5] and list(key[5]))
        return Plan(collective=kind, algorithm=algorithm, schedule=schedule, nbytes=nbytes,
                    itemsize=itemsize, ufunc=ufunc, post=post, root=root, nodes=nodes,
                    devices=devices, alpha_ns=alpha, beta_ns_per_byte=beta, gamma_ns_per_byte=gamma)

    def _alpha_beta(self, devices) -> tuple[float, float]:
        """Latency and inverse bandwidth of the slowest route between ring neighbours."""
        topology = self.rt.topology
        alpha, beta = 0.0, 0.0
        for a, b in zip(devices, devices[1:] + devices[:1]):
            if a == b:
                continue
            route = topology.route(a, b)
            alpha = max(alpha, sum(link.latency_ns for link in route))
            beta = max(beta, 1.0 / min(link.bandwidth_GBps for link in route))
        return alpha, beta


def _truncating_div(a: np.ndarray, p: int) -> np.ndarray:
    """Integer division rounding toward zero, as C (NCCL's ncclAvg on integers)."""
    return np.where(a < 0, -((-a) // p), a // p).astype(a.dtype)


def _equal_nodes(nodes) -> bool:
    counts = {}
    for n in nodes:
        counts[n] = counts.get(n, 0) + 1
    return len(set(counts.values())) == 1


def _single_rank(arrivals) -> None:
    """p == 1 (or no data): every output is its rank's input (AVG divides by 1)."""
    for a in arrivals:
        if a.ins is not None and a.outs is not None and a.ins is not a.outs and not a.hollow:
            a.outs[:] = a.ins


def _uneven_all_to_all(arrivals):
    """all_to_all_single with split sizes: pairwise exchange, step k: i -> (i + k) % p."""
    p = len(arrivals)
    splits_in = [a.fingerprint["splits_in"] for a in arrivals]
    splits_out = [a.fingerprint["splits_out"] for a in arrivals]
    offs_in = [np.concatenate(([0], np.cumsum(s)[:-1])).astype(int).tolist() for s in splits_in]
    offs_out = [np.concatenate(([0], np.cumsum(s)[:-1])).astype(int).tolist() for s in splits_out]
    steps = []
    for k in range(p):
        steps.append([Xfer(i, (i + k) % p, "in", offs_in[i][(i + k) % p], "out",
                           offs_out[(i + k) % p][i], splits_in[i][(i + k) % p], False)
                      for i in range(p) if splits_in[i][(i + k) % p]])
    in_count = max(sum(s) for s in splits_in)
    out_count = max(sum(s) for s in splits_out)
    return make_schedule("all_to_all", "direct", p, steps, in_count, out_count)
