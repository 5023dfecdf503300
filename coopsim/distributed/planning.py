"""Planning: how a collective whose members have all arrived will run.

``Planner.plan`` picks the algorithm (ccl.yaml's rules; ``nvls`` only where the group's switch
declares in-network reduction), the protocol (on topologies with ``protocols: nccl``: fixed by
ccl.yaml's ``protocol`` or, for ``auto``, the one with the smallest predicted time, as NCCL's
tuning model; elsewhere ``IDEAL``), builds or reuses its schedule, and derives the cost inputs
from the topology: ``alpha``/``beta`` of the slowest route between ring neighbours, ``gamma``
of a reduction (3 bytes of memory traffic per byte). The result is a ``Plan``, which the
execution module runs; it records the algorithm and protocol (``Collective.plan``).
"""

from __future__ import annotations

import numpy as np

from coopsim.distributed.algorithms import build_schedule
from coopsim.distributed.algorithms.analytic import model_time_ns
from coopsim.distributed.algorithms.protocols import IDEAL, Protocol, choose
from coopsim.distributed.algorithms.schedule import Xfer, make_schedule
from coopsim.distributed.execution import Compiled, rail_routes
from coopsim.distributed.tables import IN_PLACE, KIND, ROOTED

UFUNCS = {"SUM": np.add, "AVG": np.add, "PRODUCT": np.multiply, "MIN": np.minimum,
          "MAX": np.maximum, "BAND": np.bitwise_and, "BOR": np.bitwise_or, "BXOR": np.bitwise_xor}


class Plan:
    """How a collective runs: the schedule or formula inputs and the reduction."""

    __slots__ = ("collective", "algorithm", "schedule", "nbytes", "itemsize", "ufunc", "post",
                 "root", "nodes", "devices", "alpha_ns", "beta_ns_per_byte", "gamma_ns_per_byte",
                 "protocol", "switch", "rails", "routes", "analytic_ns")
    # protocol: a Protocol (IDEAL where the topology runs none); switch: for nvls, the
    # (up_links, down_links, InNetworkReduction) of the group's reducing switch, else None;
    # rails: node -> its device indices, when transfers between nodes are spread over every
    # network card of the node (NCCL's channels: one ring per NIC), else None; routes: the
    # planner's cache of TimedRun's routes between devices, shared by the plans of a spawn;
    # analytic_ns: the analytic model's time (``model_time_ns`` of the plan), once per plan

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
        self._switches: dict = {}  # device tuple -> Topology.reducing_switch of it
        self._protocols: dict = {}  # cost inputs -> the protocol chosen for them
        self._routes: dict = {}  # (device, device, striped) -> TimedRun's routes between them
        self._alpha_betas: dict = {}  # (device tuple, striped) -> _alpha_beta of it
        self._plans: dict = {}  # (kind, reduce op, root, count, dtype, device tuple) -> Plan

    def compiled(self, schedule) -> Compiled:
        """``TimedRun``'s tables for ``schedule``, built once per schedule."""
        if schedule is None:
            return None  # nvls: no schedule
        compiled = self._compiled.get(id(schedule))
        if compiled is None or compiled.schedule is not schedule:
            compiled = self._compiled[id(schedule)] = Compiled(schedule)
        return compiled

    def plan(self, arrivals) -> Plan | None:
        """How the collective of ``arrivals`` (every member's, in member order) runs; None
        when nothing moves (one rank, or no data): then every output is set here.

        A Plan depends only on the collective's kind, reduce op, root, count, dtype and the
        members' devices (and the spawn's fixed ccl and topology): it is made once per such
        key and shared (read only) by every collective with it; uneven all_to_all (split
        sizes) is planned each time."""
        fp = arrivals[0].fingerprint
        p = len(arrivals)
        kind = KIND[fp.key[0]]
        dtype = fp.dtype_obj
        count = fp.count
        splits_in = fp.splits_in
        moves = any(any(a.fingerprint.splits_in) for a in arrivals) if splits_in is not None else count
        if p == 1 or not moves:
            _single_rank(arrivals)
            return None
        devices = [a.fingerprint.device for a in arrivals]
        if splits_in is not None:
            return self._plan(arrivals, kind, dtype, count, devices)
        key = (kind, fp.key[4], fp.root_member, count, dtype, tuple(devices))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(arrivals, kind, dtype, count, devices)
        return plan

    def _plan(self, arrivals, kind, dtype, count, devices) -> Plan:
        fp = arrivals[0].fingerprint
        p = len(arrivals)
        splits_in = fp.splits_in
        itemsize = dtype.itemsize
        nbytes = (count if kind in IN_PLACE else count * p) * itemsize
        if splits_in is not None:  # uneven all_to_all: the formula's n is the largest rank's total
            nbytes = max(sum(a.fingerprint["splits_in"]) for a in arrivals) * itemsize
        nodes = [self.rt.topology.devices[d].node for d in devices]
        algorithm, protocol, switch, alpha, beta, gamma = self.choose(
            kind, nbytes, devices, uneven=splits_in is not None)
        multi_node = len(set(nodes)) > 1
        root = fp["root_member"]
        reduce_op = fp["reduce_op"]
        post = None
        if reduce_op == "AVG":
            post = average(dtype, p)
        ufunc = UFUNCS[reduce_op] if reduce_op else np.add
        schedule = None
        if self.ccl.model == "transfer" and switch is None:
            if splits_in is not None:
                schedule = _uneven_all_to_all(arrivals)
            else:
                key = (kind, algorithm, p, count, root if kind in ROOTED else None,
                       tuple(nodes) if algorithm == "hierarchical" else None)
                schedule = self._schedules.get(key)
                if schedule is None:
                    schedule = self._schedules[key] = build_schedule(*key[:5], key[5] and list(key[5]))
        analytic_ns = model_time_ns(kind, algorithm, p, nbytes, alpha, beta, gamma, protocol, nodes)
        return Plan(collective=kind, algorithm=algorithm, schedule=schedule, nbytes=nbytes,
                    itemsize=itemsize, ufunc=ufunc, post=post, root=root, nodes=nodes,
                    devices=devices, alpha_ns=alpha, beta_ns_per_byte=beta, gamma_ns_per_byte=gamma,
                    protocol=protocol, switch=switch,
                    rails=self._rails() if multi_node and protocol is not IDEAL else None,  # as choose
                    routes=self._routes, analytic_ns=analytic_ns)

    def choose(self, kind: str, nbytes: int, devices, uneven: bool = False):
        """``(algorithm, protocol, switch, alpha_ns, beta_ns_per_byte, gamma_ns_per_byte)`` of a
        ``kind`` collective of ``nbytes`` (nccl-tests' size) on the global ``devices``, in group
        order: what ``plan`` runs, also for tools that report it (the benches print the
        algorithm and ``protocol.name`` per size). ``uneven``: all_to_all with split sizes."""
        topology = self.rt.topology
        nodes = [topology.devices[d].node for d in devices]
        multi_node = len(set(nodes)) > 1
        switch = None if uneven else self._switch(kind, devices)
        nccl = self._runs_nccl()
        algorithm = self.ccl.algorithm_where(kind, nbytes, multi_node, switch is not None, nccl)
        if algorithm == "hierarchical" and not _equal_nodes(nodes):
            algorithm = self.ccl.algorithm_where(kind, nbytes, False, switch is not None, nccl)
        if algorithm != "nvls":
            switch = None
        gamma = 3.0 / self.rt.devices[devices[0]].kind.memory_bandwidth_GBps  # reads 2, writes 1 byte
        rails = self._rails() if multi_node and nccl else None
        if switch:
            alpha, beta = _switch_alpha_beta(switch)
        else:  # the same group plans it once per spawn (a barrier, then every collective)
            key = (tuple(devices), rails is not None)
            alpha_beta = self._alpha_betas.get(key)
            if alpha_beta is None:
                alpha_beta = self._alpha_betas[key] = self._alpha_beta(devices, rails)
            alpha, beta = alpha_beta
        protocol = self._protocol(kind, algorithm, len(devices), nbytes, alpha, beta, gamma, nodes)
        return algorithm, protocol, switch, alpha, beta, gamma

    def _rails(self) -> dict:
        """node -> its device indices in ascending order (the relays of each rail)."""
        rails: dict = {}
        for device in self.rt.topology.devices:
            rails.setdefault(device.node, []).append(device.index)
        return rails

    def _runs_nccl(self) -> bool:
        """The topology runs NCCL's protocols and ccl.yaml does not turn them off."""
        return (self.rt.topology.protocols == "nccl" and bool(self.ccl.protocols)
                and self.ccl.protocol != "ideal")

    def _switch(self, kind, devices):
        """The group's reducing switch, if ccl.yaml could choose nvls for ``kind``."""
        if not any(a == "nvls" for _, a in self.ccl.rules[kind]):
            return None
        key = tuple(devices)
        if key not in self._switches:
            self._switches[key] = self.rt.topology.reducing_switch(devices)
        return self._switches[key]

    def _protocol(self, kind, algorithm, p, nbytes, alpha, beta, gamma, nodes):
        """NCCL's choice (see the module docstring); nvls runs Simple only (as NCCL)."""
        if not self._runs_nccl():
            return IDEAL
        if algorithm == "nvls":  # the switch's latency replaces the base (tuning.cc's NVLS)
            simple = self.ccl.protocols["Simple"]
            return Protocol("Simple", 0.0, 0.0, simple.bandwidth_efficiency, simple.slice_bytes)
        key = (kind, algorithm, p, nbytes, alpha, beta, gamma,
               tuple(nodes) if algorithm == "hierarchical" else None)
        chosen = self._protocols.get(key)
        if chosen is None:
            chosen = self._protocols[key] = choose(
                self.ccl.protocols, self.ccl.protocol,
                lambda proto: model_time_ns(kind, algorithm, p, nbytes, alpha, beta, gamma, proto, nodes))
        return chosen

    def _alpha_beta(self, devices, rails=None) -> tuple[float, float]:
        """Latency and inverse bandwidth of the slowest route between ring neighbours; a pair
        spread over ``rails`` (``rail_routes``) has its slowest stripe's latency and the
        bandwidth of its busiest link for the share of the stripes that cross it. Without
        rails one pair per ``Topology.route_class`` is costed (the max is the same)."""
        topology = self.rt.topology
        pairs = zip(devices, devices[1:] + devices[:1])
        if not rails and topology.one_route_class:  # one class: its first pair costs all
            first = next(((a, b) for a, b in pairs if a != b), None)
            pairs = () if first is None else (first,)
        elif not rails:  # equal route classes have equal costs: cost one pair of each
            firsts: dict = {}
            for a, b in pairs:
                if a != b:
                    firsts.setdefault(topology.route_class(a, b), (a, b))
            pairs = firsts.values()
        alpha, beta = 0.0, 0.0
        for a, b in pairs:
            if a == b:
                continue
            routes = rail_routes(topology, a, b, rails) if rails else (topology.route(a, b),)
            crossings: dict = {}
            for route in routes:
                alpha = max(alpha, sum(link.latency_ns for link in route))
                for link in route:
                    crossings[link.index] = (link, crossings.get(link.index, (link, 0))[1] + 1)
            bandwidth = min(link.bandwidth_GBps * len(routes) / n for link, n in crossings.values())
            beta = max(beta, 1.0 / bandwidth)
        return alpha, beta


def _switch_alpha_beta(switch) -> tuple[float, float]:
    """nvls: the switch's latency plus the slower of a device's up- and down-link, and the
    inverse of the slowest link's bandwidth times the switch's efficiency."""
    up, down, reduction = switch
    alpha = reduction.latency_ns + max(link.latency_ns for link in up + down)
    bandwidth = min(link.bandwidth_GBps for link in up + down) * reduction.efficiency
    return alpha, 1.0 / bandwidth


def average(dtype, p: int):
    """AVG's last step on a sum of ``p`` values: ``/ p``, in C division for integers (what
    torch's ReduceOp.AVG runs on NCCL: ncclAvg)."""
    return (lambda a: a / p) if dtype.is_floating_point else (lambda a: _truncating_div(a, p))


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
