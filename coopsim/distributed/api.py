"""``ctx.distributed``: the torch.distributed API on simulated devices and links.

Every function is called inside a spawned rank and keeps PyTorch's name, signature and
argument checks. Collectives are device work (NCCL's semantics): they enqueue an op on the
tensor's device stream and return at once (a ``Work`` with ``async_op=True``); host reads of
their outputs wait for them (C8). ``send``/``recv``/``barrier`` block the calling rank until
done. State lives per spawn on ``ctx._scheduler.spawn.dist`` (a ``DistState``).
"""

from __future__ import annotations

import datetime
import functools

import numpy as np

from coopsim.distributed.algorithms import build_schedule
from coopsim.distributed.algorithms.schedule import Xfer, make_schedule
from coopsim.distributed.ccl import load_ccl
from coopsim.distributed.collective import Arrival, Compiled, Plan
from coopsim.distributed.group import ProcessGroup
from coopsim.distributed.p2p import P2P
from coopsim.engine import Handle

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)  # gloo's default, as torch.distributed


class _RedOp:
    __slots__ = ("name", "value")

    def __init__(self, name: str, value: int):
        self.name, self.value = name, value

    def __repr__(self) -> str:
        return f"<RedOpType.{self.name}: {self.value}>"


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


_UFUNCS = {"SUM": np.add, "AVG": np.add, "PRODUCT": np.multiply, "MIN": np.minimum,
           "MAX": np.maximum, "BAND": np.bitwise_and, "BOR": np.bitwise_or, "BXOR": np.bitwise_xor}


class _NonGroupMember:
    def __repr__(self) -> str:
        return "GroupMember.NON_GROUP_MEMBER"


class GroupMember:
    """``torch.distributed.GroupMember``: ``NON_GROUP_MEMBER`` is what ``new_group`` returns to
    a rank outside the group (``WORLD`` is ``ctx.distributed.group.WORLD``)."""

    NON_GROUP_MEMBER = _NonGroupMember()


class Work:
    """``torch.distributed.Work``: an asynchronous collective or p2p op."""

    def __init__(self, ctx, handle, failure=None):
        self._ctx = ctx
        self._handle = handle
        self._failure = failure  # callable -> the exception that failed the op, or None

    def wait(self, timeout=None) -> bool:
        """Block the calling rank until the op has completed (raises if it failed)."""
        self._ctx.wait(self._handle)
        return True

    def is_completed(self) -> bool:
        return self._handle.done

    def is_success(self) -> bool:
        return self._handle.done and self.exception() is None

    def exception(self):
        return self._failure() if self._failure is not None else None


class P2POp:
    """``torch.distributed.P2POp``: ``op`` is ``ctx.distributed.isend`` or ``irecv``."""

    def __init__(self, op, tensor, peer=None, group=None, tag=0, group_peer=None):
        if getattr(op, "__name__", None) not in ("isend", "irecv"):
            raise ValueError("Invalid ``op``. Expected ``op`` to be of type ``torch.distributed.isend`` "
                             "or ``torch.distributed.irecv``.")
        if (peer is None) == (group_peer is None):
            raise ValueError("Exactly one of peer and group_peer must be given")
        self.op, self.tensor, self.peer, self.group, self.tag = op, tensor, peer, group, tag
        self.group_peer = group_peer


class DistState:
    """One spawn's process groups, p2p matching and per-rank initialisation."""

    def __init__(self, ctx, world_size: int, timeout_ns: float):
        self.ctx = ctx
        self.ccl = ctx.ccl
        self.world = ProcessGroup(0, range(world_size), timeout_ns, "WORLD")
        self.groups = [self.world]  # index = creation order, as every rank creates them
        self.initialized: dict[int, str] = {}  # rank -> backend
        self.new_group_calls: dict[int, int] = {}
        self.p2p = P2P(self)
        self.pending: dict[int, list] = {}  # rank -> its open collective Arrivals, in order
        self._schedules: dict = {}  # build_schedule's arguments -> Schedule
        self._compiled: dict = {}  # Schedule -> Compiled (TimedRun's tables for it)
        self._barriers: dict = {}  # (group id, number) -> monitored barrier state
        self._barrier_calls: dict = {}  # (group id, rank) -> monitored barriers called

    def compiled(self, schedule):
        """``TimedRun``'s tables for ``schedule``, built once per schedule."""
        compiled = self._compiled.get(id(schedule))
        if compiled is None or compiled.schedule is not schedule:
            compiled = self._compiled[id(schedule)] = Compiled(schedule)
        return compiled

    def monitored_barrier(self, group, task, timeout_ns: float, wait_all_ranks: bool):
        """Member 0 waits for the others (at most ``timeout_ns``: a real timeout, which fires
        whatever else happens), then releases them; it raises naming the missing ranks."""
        engine, ctx = self.ctx.engine, self.ctx
        key = (group.gid, task.rank)
        number = self._barrier_calls[key] = self._barrier_calls.get(key, 0) + 1
        entry = self._barriers.setdefault((group.gid, number), {
            "arrived": set(), "all": Handle(f"monitored_barrier #{number} on group {group.name}: all arrived"),
            "release": Handle(f"monitored_barrier #{number} on group {group.name}: release by rank {group.ranks[0]}")})
        member = group.member(task.rank)
        entry["arrived"].add(member)
        if len(entry["arrived"]) == group.size:
            engine.schedule(entry["all"], engine.now_ns)
        if member != 0:
            ctx.wait(entry["release"])
            return None
        gate = Handle(f"monitored_barrier #{number} on group {group.name}")
        timer = engine.timer(timeout_ns, f"monitored_barrier timeout ({timeout_ns / 1e6:g} ms)")
        for h in (timer, entry["all"]):
            h.add_callback(lambda _h: gate.done or engine.schedule(gate, engine.now_ns))
        ctx.wait(gate)
        if not entry["all"].done:
            missing = [group.ranks[m] for m in range(group.size) if m not in entry["arrived"]]
            ms = f"{timeout_ns / 1e6:g}"
            if wait_all_ranks:
                raise RuntimeError(f"[Rank {task.rank}]: Ranks {', '.join(map(str, missing))} failed "
                                   f"to pass monitoredBarrier in {ms} ms")
            raise RuntimeError(f"[Rank {task.rank}]: Rank {missing[0]} failed to pass "
                               f"monitoredBarrier in {ms} ms")
        engine.schedule(entry["release"], engine.now_ns)
        return None

    # -- planning -------------------------------------------------------------------------

    def plan(self, collective, arrivals):
        """How ``collective`` runs: ``Plan`` (or None when nothing moves)."""
        fp = arrivals[0].fingerprint
        p = len(arrivals)
        kind = _KINDS[fp["op"]]  # the schedule's collective (a barrier is a 1-element all_reduce)
        dtype = fp["dtype_obj"]
        count = fp["count"]
        splits_in = fp.get("splits_in")
        moves = any(any(a.fingerprint["splits_in"]) for a in arrivals) if splits_in is not None else count
        if p == 1 or not moves:
            _single_rank(kind, arrivals, fp)
            return None
        itemsize = dtype.itemsize
        total = count if kind in ("all_reduce", "broadcast", "reduce") else count * p
        nbytes = total * itemsize
        if splits_in is not None:  # uneven all_to_all: the formula's n is the largest rank's total
            nbytes = max(sum(a.fingerprint["splits_in"]) for a in arrivals) * itemsize
        devices = [a.fingerprint["device"] for a in arrivals]
        topology = self.ctx.topology
        nodes = [topology.devices[d].node for d in devices]
        multi_node = len(set(nodes)) > 1
        algorithm = self.ccl.algorithm(kind, nbytes, multi_node)
        if algorithm == "hierarchical" and not _equal_nodes(nodes):
            algorithm = self.ccl.algorithm(kind, nbytes, False)
        root = fp["root_member"]
        alpha, beta = self._alpha_beta(devices)
        device = self.ctx._devices[devices[0]]
        gamma = 3.0 / device.kind.memory_bandwidth_GBps  # a reduction reads 2 and writes 1 byte
        reduce_op = fp["reduce_op"]
        post = None
        if reduce_op == "AVG":
            post = (lambda a: a / p) if dtype.is_floating_point else (lambda a: _truncating_div(a, p))
        ufunc = _UFUNCS[reduce_op] if reduce_op else np.add
        schedule = None
        if self.ccl.model == "transfer":
            if fp.get("splits_in") is not None:
                schedule = _uneven_all_to_all(fp, arrivals)
            else:
                key = (kind, algorithm, p, count, root if kind in _ROOTED else None,
                       tuple(nodes) if algorithm == "hierarchical" else None)
                schedule = self._schedules.get(key)
                if schedule is None:
                    schedule = self._schedules[key] = build_schedule(*key[:5], key[5] and list(key[5]))
        return Plan(collective=kind, algorithm=algorithm, schedule=schedule, nbytes=nbytes,
                    itemsize=itemsize, ufunc=ufunc, post=post, root=root, nodes=nodes,
                    devices=devices, alpha_ns=alpha, beta_ns_per_byte=beta, gamma_ns_per_byte=gamma)

    def _alpha_beta(self, devices) -> tuple[float, float]:
        """Latency and inverse bandwidth of the slowest route between ring neighbours."""
        topology = self.ctx.topology
        alpha, beta = 0.0, 0.0
        for a, b in zip(devices, devices[1:] + devices[:1]):
            if a == b:
                continue
            route = topology.route(a, b)
            alpha = max(alpha, sum(link.latency_ns for link in route))
            beta = max(beta, 1.0 / min(link.bandwidth_GBps for link in route))
        return alpha, beta


_KINDS = {"all_reduce": "all_reduce", "broadcast": "broadcast", "reduce": "reduce",
          "all_gather": "all_gather", "all_gather_into_tensor": "all_gather",
          "reduce_scatter": "reduce_scatter", "reduce_scatter_tensor": "reduce_scatter",
          "all_to_all": "all_to_all", "all_to_all_single": "all_to_all", "gather": "gather",
          "scatter": "scatter", "barrier": "all_reduce", "monitored_barrier": "all_reduce"}
_ROOTED = ("broadcast", "reduce", "gather", "scatter")


def _truncating_div(a: np.ndarray, p: int) -> np.ndarray:
    """Integer division rounding toward zero, as C (NCCL's ncclAvg on integers)."""
    return np.where(a < 0, -((-a) // p), a // p).astype(a.dtype)


def _equal_nodes(nodes) -> bool:
    counts = {}
    for n in nodes:
        counts[n] = counts.get(n, 0) + 1
    return len(set(counts.values())) == 1


def _single_rank(kind, arrivals, fp) -> None:
    """p == 1 (or no data): every output is its rank's input (AVG divides by 1)."""
    for a in arrivals:
        if a.ins is not None and a.outs is not None and a.ins is not a.outs:
            a.outs[:] = a.ins


def _uneven_all_to_all(fp, arrivals):
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


class _GroupNamespace:
    """``torch.distributed.group``: ``WORLD`` is the calling spawn's default group."""

    def __init__(self, dist):
        self._dist = dist

    @property
    def WORLD(self):  # noqa: N802 - torch's name
        state = self._dist._spawn_state()
        return None if state is None else state.world


class Distributed:
    """The ``torch.distributed``-shaped namespace of a ``RuntimeContext``."""

    ReduceOp = ReduceOp
    GroupMember = GroupMember
    P2POp = P2POp
    Work = Work
    ProcessGroup = ProcessGroup

    def __init__(self, ctx):
        self._ctx = ctx
        self.group = _GroupNamespace(self)

    # -- state ----------------------------------------------------------------------------

    def _spawn_state(self):
        spawn = self._ctx._scheduler.spawn
        return None if spawn is None else spawn.dist

    def _caller(self, what: str, initialized: bool = True):
        task = self._ctx._current_task()
        if task is None or task.owner is not None:
            raise RuntimeError(f"torch.distributed.{what} must be called inside a rank started by "
                               f"ctx.multiprocessing.spawn")
        state = self._spawn_state()
        if initialized and (state is None or task.rank not in state.initialized):
            raise ValueError("Default process group has not been initialized, please make sure "
                             "to call init_process_group.")
        return task, state

    def _group(self, state, group) -> ProcessGroup:
        if group is None:
            return state.world
        if group is GroupMember.NON_GROUP_MEMBER:
            return None
        if not isinstance(group, ProcessGroup) or group not in state.groups:
            raise ValueError(f"group must be None, a group from new_group() or group.WORLD, got {group!r}")
        return group

    def explain_deadlock(self, report: dict, tasks) -> None:
        """Called by the scheduler on a deadlock: adds collective and p2p details."""
        _explain_deadlock(self, report, tasks)

    # -- process groups -------------------------------------------------------------------

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        task = self._ctx._current_task()
        state = self._spawn_state()
        return task is not None and state is not None and task.rank in state.initialized

    def init_process_group(self, backend=None, init_method=None, timeout=None, world_size=-1,
                           rank=-1, store=None, group_name="", pg_options=None, device_id=None):
        task, state = self._caller("init_process_group", initialized=False)
        spawn = self._ctx._scheduler.spawn
        nprocs = len(spawn.ranks)
        if world_size not in (-1, None) and world_size != nprocs:
            raise ValueError(f"init_process_group: world_size={world_size} contradicts the spawn, "
                             f"which runs {nprocs} ranks (omit world_size, or pass {nprocs})")
        if rank not in (-1, None) and rank != task.rank:
            raise ValueError(f"init_process_group: rank={rank} contradicts the spawn: this is "
                             f"rank {task.rank} (omit rank, or pass the rank spawn gave fn)")
        timeout_ns = _timeout_ns(timeout if timeout is not None else DEFAULT_TIMEOUT, "init_process_group")
        if state is None:
            state = spawn.dist = DistState(self._ctx, nprocs, timeout_ns)
        if task.rank in state.initialized:
            raise ValueError("trying to initialize the default process group twice!")
        state.initialized[task.rank] = "coopsim" if backend is None else str(backend)

    def destroy_process_group(self, group=None) -> None:
        task, state = self._caller("destroy_process_group")
        if group is None or group is state.world:
            del state.initialized[task.rank]

    def get_rank(self, group=None) -> int:
        task, state = self._caller("get_rank")
        g = self._group(state, group)
        return -1 if g is None else g.member(task.rank)

    def get_world_size(self, group=None) -> int:
        task, state = self._caller("get_world_size")
        g = self._group(state, group)
        return -1 if g is None else g.size

    def get_backend(self, group=None) -> str:
        task, state = self._caller("get_backend")
        return state.initialized[task.rank]

    def new_group(self, ranks=None, timeout=None, backend=None, pg_options=None,
                  use_local_synchronization=False, group_desc=None):
        """Every rank calls ``new_group`` with the same ranks, in the same order (as torch)."""
        task, state = self._caller("new_group")
        world = state.world.size
        members = list(range(world)) if ranks is None else list(ranks)
        if any(isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < world for r in members) \
                or len(set(members)) != len(members):
            raise ValueError(f"new_group: ranks must be distinct ints in 0..{world - 1}, got {ranks!r}")
        members = sorted(members)
        k = state.new_group_calls.get(task.rank, 0) + 1
        state.new_group_calls[task.rank] = k
        if k < len(state.groups):
            group = state.groups[k]
            if list(group.ranks) != members:
                raise ValueError(f"new_group call #{k}: rank {task.rank} passed ranks {members}, "
                                 f"but an earlier caller passed {list(group.ranks)}; every rank "
                                 f"must call new_group with the same ranks, in the same order")
        else:
            timeout_ns = _timeout_ns(timeout, "new_group") if timeout is not None else state.world.timeout_ns
            group = ProcessGroup(k, members, timeout_ns, group_desc or f"group{k}")
            state.groups.append(group)
        return group if group.member(task.rank) >= 0 else GroupMember.NON_GROUP_MEMBER

    # -- collectives ----------------------------------------------------------------------

    def all_reduce(self, tensor, op=ReduceOp.SUM, group=None, async_op=False):
        flat = _flat(tensor, "all_reduce")
        return self._collective("all_reduce", group, async_op, [tensor], flat, flat, [tensor],
                                reduce_op=_op(op, tensor))

    def broadcast(self, tensor, src=None, group=None, async_op=False, group_src=None):
        flat = _flat(tensor, "broadcast")
        return self._collective("broadcast", group, async_op, [tensor], flat, flat, [tensor],
                                root=(src, group_src))

    def reduce(self, tensor, dst=None, op=ReduceOp.SUM, group=None, async_op=False, group_dst=None):
        flat = _flat(tensor, "reduce")
        return self._collective("reduce", group, async_op, [tensor], flat, flat, [tensor],
                                reduce_op=_op(op, tensor), root=(dst, group_dst))

    def all_gather_into_tensor(self, output_tensor, input_tensor, group=None, async_op=False):
        out, inp = _flat(output_tensor, "all_gather_into_tensor"), _flat(input_tensor, "all_gather_into_tensor")
        _same_dtype(output_tensor, input_tensor, "all_gather_into_tensor")
        return self._collective("all_gather_into_tensor", group, async_op, [output_tensor, input_tensor],
                                inp, out, [output_tensor], out_multiple=True)

    def all_gather(self, tensor_list, tensor, group=None, async_op=False):
        inp = _flat(tensor, "all_gather")
        _tensor_list(tensor_list, tensor, "all_gather", "tensor_list")
        staging = np.empty(inp.size * len(tensor_list), dtype=inp.dtype)
        return self._collective("all_gather", group, async_op, [*tensor_list, tensor], inp, staging,
                                tensor_list, finish=_scatter_into(staging, tensor_list), list_len=len(tensor_list))

    def reduce_scatter_tensor(self, output, input, op=ReduceOp.SUM, group=None, async_op=False):
        out, inp = _flat(output, "reduce_scatter_tensor"), _flat(input, "reduce_scatter_tensor")
        _same_dtype(output, input, "reduce_scatter_tensor")
        return self._collective("reduce_scatter_tensor", group, async_op, [output, input], inp, out,
                                [output], reduce_op=_op(op, output), in_multiple=True)

    def reduce_scatter(self, output, input_list, op=ReduceOp.SUM, group=None, async_op=False):
        out = _flat(output, "reduce_scatter")
        _tensor_list(input_list, output, "reduce_scatter", "input_list")
        staging = np.empty(out.size * len(input_list), dtype=out.dtype)
        return self._collective("reduce_scatter", group, async_op, [output, *input_list], staging, out,
                                [output], reduce_op=_op(op, output), prepare=_gather_from(input_list, staging),
                                list_len=len(input_list))

    def all_to_all_single(self, output, input, output_split_sizes=None, input_split_sizes=None,
                          group=None, async_op=False):
        out, inp = _flat(output, "all_to_all_single"), _flat(input, "all_to_all_single")
        _same_dtype(output, input, "all_to_all_single")
        splits = None
        if output_split_sizes is not None or input_split_sizes is not None:
            splits = (list(input_split_sizes or []), list(output_split_sizes or []))
        return self._collective("all_to_all_single", group, async_op, [output, input], inp, out,
                                [output], splits=splits, in_multiple=True)

    def all_to_all(self, output_tensor_list, input_tensor_list, group=None, async_op=False):
        if not input_tensor_list or len(output_tensor_list) != len(input_tensor_list):
            raise ValueError("all_to_all: output_tensor_list and input_tensor_list must have one "
                             "tensor per rank of the group")
        first = input_tensor_list[0]
        _tensor_list(input_tensor_list, first, "all_to_all", "input_tensor_list")
        _tensor_list(output_tensor_list, first, "all_to_all", "output_tensor_list")
        n = first.numel() * len(input_tensor_list)
        ins = np.empty(n, dtype=first._array.dtype)
        outs = np.empty(n, dtype=first._array.dtype)
        return self._collective("all_to_all", group, async_op, [*output_tensor_list, *input_tensor_list],
                                ins, outs, output_tensor_list, prepare=_gather_from(input_tensor_list, ins),
                                finish=_scatter_into(outs, output_tensor_list), list_len=len(input_tensor_list))

    def gather(self, tensor, gather_list=None, dst=None, group=None, async_op=False, group_dst=None):
        inp = _flat(tensor, "gather")
        return self._rooted_list("gather", tensor, inp, gather_list, (dst, group_dst), group, async_op)

    def scatter(self, tensor, scatter_list=None, src=None, group=None, async_op=False, group_src=None):
        out = _flat(tensor, "scatter")
        return self._rooted_list("scatter", tensor, out, scatter_list, (src, group_src), group, async_op)

    def _rooted_list(self, what, tensor, flat, tensor_list, root, group, async_op):
        task, state = self._caller(what)
        g = self._group(state, group)
        if g is None:
            return None
        root_member = _root_member(g, root, what)
        list_name = "gather_list" if what == "gather" else "scatter_list"
        is_root = g.member(task.rank) == root_member
        if is_root:
            if not tensor_list or len(tensor_list) != g.size:
                raise ValueError(f"Argument ``{list_name}`` must be specified on destination rank."
                                 if what == "gather" else
                                 f"Argument ``{list_name}`` must be specified on source rank.")
            _tensor_list(tensor_list, tensor, what, list_name)
        elif tensor_list:
            raise ValueError(f"Argument ``{list_name}`` must NOT be specified on non-destination ranks."
                             if what == "gather" else
                             f"Argument ``{list_name}`` must NOT be specified on non-source ranks.")
        staging = np.empty(flat.size * g.size, dtype=flat.dtype)
        if what == "gather":
            return self._collective(what, group, async_op, [tensor], flat, staging,
                                    tensor_list if is_root else [],
                                    finish=_scatter_into(staging, tensor_list) if is_root else None,
                                    root=root)
        return self._collective(what, group, async_op, [tensor], staging, flat, [tensor],
                                prepare=_gather_from(tensor_list, staging) if is_root else None, root=root)

    def barrier(self, group=None, async_op=False, device_ids=None):
        """All ranks of the group arrive before any leaves (blocks the calling rank)."""
        task, _ = self._caller("barrier")
        token = np.zeros(1, dtype=np.int32)
        work = self._collective("barrier", group, True, [], token, token, [], reduce_op="SUM",
                                dtype_name="int32")
        if work is None or async_op:
            return work
        work.wait()
        return None

    def monitored_barrier(self, group=None, timeout=None, wait_all_ranks=False):
        """gloo's monitored barrier: rank 0 of the group raises, naming the ranks that did not
        arrive within ``timeout`` (a real timeout: it fires even if nothing else happens)."""
        task, state = self._caller("monitored_barrier")
        g = self._group(state, group)
        if g is None:
            return None
        timeout_ns = _timeout_ns(timeout, "monitored_barrier") if timeout is not None else g.timeout_ns
        return state.monitored_barrier(g, task, timeout_ns, wait_all_ranks)

    # -- point to point -------------------------------------------------------------------

    def isend(self, tensor, dst=None, group=None, tag=0, group_dst=None):
        return self._p2p("send", tensor, dst, group, tag, group_dst)

    def irecv(self, tensor, src=None, group=None, tag=0, group_src=None):
        return self._p2p("recv", tensor, src, group, tag, group_src)

    def send(self, tensor, dst=None, group=None, tag=0, group_dst=None) -> None:
        self.isend(tensor, dst, group, tag, group_dst).wait()

    def recv(self, tensor, src=None, group=None, tag=0, group_src=None) -> int:
        """Blocks until received; returns the sender's rank (useful with ``src=None``)."""
        work = self.irecv(tensor, src, group, tag, group_src)
        work.wait()
        return work._post.match.rank

    def batch_isend_irecv(self, p2p_op_list) -> list:
        if not p2p_op_list or not all(isinstance(p, P2POp) for p in p2p_op_list):
            raise ValueError("Invalid ``p2p_op_list``. Each op is expected to to be of type "
                             "``torch.distributed.P2POp``.")
        return self._p2p_batch([("send" if p.op.__name__ == "isend" else "recv", p.tensor, p.peer,
                                 p.group, p.tag, p.group_peer) for p in p2p_op_list])

    def _p2p(self, kind, tensor, peer, group, tag, group_peer):
        return self._p2p_batch([(kind, tensor, peer, group, tag, group_peer)])[0]

    def _p2p_batch(self, ops) -> list:
        """Post the ops, then enqueue them as ONE stream op (NCCL's group semantics: the ops
        of a batch progress together, so a ring of send-then-receive does not deadlock)."""
        posts = [self._p2p_post(*op) for op in ops]
        live = [post for post in posts if post is not None]
        if not live:
            return posts
        state = self._spawn_state()
        device = live[0].tensor._storage.device
        if any(post.tensor._storage.device is not device for post in live):
            raise ValueError("batch_isend_irecv: all tensors must be on one device")

        def start():
            handles = [state.p2p.ready(post) for post in live]
            if len(handles) == 1:
                return handles[0]
            done = Handle(f"batch of {len(handles)} p2p ops")
            remaining = [len(handles)]

            def one_done(_h):
                remaining[0] -= 1
                if remaining[0] == 0:
                    self._ctx.engine.schedule(done, self._ctx.engine.now_ns)

            for h in handles:
                h.add_callback(one_done)
            return done

        desc = live[0].describe() if len(live) == 1 else f"batch_isend_irecv of {len(live)} ops by rank {live[0].rank}"
        op = device.stream.enqueue_work(desc, start, device.kind.launch_overhead_ns)
        works = []
        for post in posts:
            if post is None:
                works.append(None)
                continue
            if post.kind == "recv":
                post.tensor._storage.last_write = op
            state.p2p.track(op, post)
            work = Work(self._ctx, op, lambda post=post: post.error)
            work._post = post
            works.append(work)
        return works

    def _p2p_post(self, kind, tensor, peer, group, tag, group_peer):
        what = "isend" if kind == "send" else "irecv"
        task, state = self._caller(what)
        g = self._group(state, group)
        if g is None:
            return None
        flat = _flat(tensor, what)
        if group_peer is not None:
            if peer is not None:
                raise ValueError(f"{what}: pass only one of {'dst' if kind == 'send' else 'src'} and group_peer")
            peer = g.ranks[group_peer]
        if kind == "send" and peer is None:
            raise ValueError("isend: dst must be given")
        if peer is not None and g.member(peer) < 0:
            raise ValueError(f"{what}: rank {peer} is not in group {g.name} (ranks {list(g.ranks)})")
        if peer == task.rank:
            raise ValueError("Invalid destination rank: destination rank should not be the same as "
                             "the rank of the current process." if kind == "send" else
                             "Invalid source rank: source rank should not be the same as the rank "
                             "of the current process.")
        from coopsim.distributed.p2p import Post

        return state.p2p.post(Post(kind, task.rank, peer, g, tag, tensor, flat, task))

    # -- the collective core --------------------------------------------------------------

    def _collective(self, what, group, async_op, tensors, ins, outs, written, *, reduce_op=None,
                    root=(None, None), prepare=None, finish=None, splits=None, list_len=None,
                    in_multiple=False, out_multiple=False, dtype_name=None):
        task, state = self._caller(what)
        g = self._group(state, group)
        if g is None:
            return None
        member = g.member(task.rank)
        devices = {t._storage.device.index for t in tensors}
        if len(devices) > 1:
            raise ValueError(f"{what}: all tensors must be on one device, got cuda:{sorted(devices)}")
        device = self._ctx._devices[devices.pop()] if tensors else self._ctx._device()
        if list_len is not None and list_len != g.size:
            raise ValueError(f"{what}: the tensor list must have {g.size} tensors (the group size), got {list_len}")
        if in_multiple and splits is None and ins.size % g.size:
            raise ValueError(f"{what}: input of {ins.size} elements does not divide among {g.size} ranks")
        if out_multiple and outs.size != ins.size * g.size:
            raise ValueError(f"{what}: output must have group size x input elements "
                             f"({g.size} x {ins.size}), got {outs.size}")
        root_member = _root_member(g, root, what) if root != (None, None) else None
        if what == "reduce_scatter_tensor" and outs.size * g.size != ins.size:
            raise ValueError(f"{what}: input must have group size x output elements "
                             f"({g.size} x {outs.size}), got {ins.size}")
        dtype = tensors[0].dtype if tensors else _dtype_named(dtype_name)
        count = _count(what, ins, outs, g.size)
        splits_in = splits_out = None
        if splits is not None:
            splits_in, splits_out = _splits(splits, ins.size, outs.size, g.size, what)
        seq = g.next_seq(task.rank)
        fingerprint = {
            "op": what, "seq": seq,
            "shapes": None if splits is not None else [tuple(t.shape) for t in tensors],
            "dtypes": [str(t.dtype) for t in tensors] if tensors else [dtype_name],
            "reduce_op": reduce_op, "root": None if root_member is None else g.ranks[root_member],
            "splits": None,
            "count": count, "dtype_obj": dtype, "device": device.index, "root_member": root_member,
            "splits_in": splits_in, "splits_out": splits_out,
        }
        finishers = []
        if ins is not outs and outs.size and ins.size and np.shares_memory(ins, outs):
            # in-place forms (output is the input's chunk, or the input is the output's chunk):
            # the schedule writes a separate buffer, copied into the tensor when done
            target, outs = outs, np.empty_like(outs)
            finishers.append(functools.partial(np.copyto, target, outs))
        if dtype._name == "bfloat16":
            finishers.insert(0, _round_bfloat16(outs))
        if finish is not None:
            finishers.append(finish)
        finish = _chain(finishers)
        collective = g.collective(state, seq, what)
        arrival = Arrival(task, member, fingerprint, ins, outs, prepare, finish, ins.size)
        done = collective.arrive(arrival)
        pending = state.pending.setdefault(task.rank, [])
        pending.append(arrival)
        done.add_callback(lambda _h: pending.remove(arrival))
        op = device.stream.enqueue_work(("{} on dev{}", collective.name, device.index),
                                        lambda: collective.member_ready(member),
                                        device.kind.launch_overhead_ns)
        for t in written:
            t._storage.last_write = op
        return Work(self._ctx, op, lambda: collective.error) if async_op else None


def out_of_place(dist, kind: str, output, input, *, op=ReduceOp.SUM, root=None):
    """NCCL's out-of-place ``all_reduce``, ``broadcast`` and ``reduce`` (distinct send and
    receive buffers), which torch.distributed has no call for; returns the ``Work``.

    ``dist`` is a context's ``distributed`` namespace, ``root`` the global rank of the
    source or destination for ``broadcast``/``reduce``. The schedules work in the output
    buffer, so the input is staged into it when the collective starts, at no cost (NCCL's
    first step reads the send buffer directly).
    """
    if kind not in ("all_reduce", "broadcast", "reduce"):
        raise ValueError(f"out_of_place: kind must be all_reduce, broadcast or reduce, got {kind!r}")
    ins, outs = _flat(input, kind), _flat(output, kind)
    _same_dtype(output, input, kind)

    def stage():
        outs[:] = ins

    reduce_op = _op(op, output) if kind != "broadcast" else None
    return dist._collective(kind, None, True, [output, input], ins, outs, [output], reduce_op=reduce_op,
                            root=(root, None) if kind != "all_reduce" else (None, None), prepare=stage)


def _chain(calls):
    """One callable running ``calls`` in order (None if there are none)."""
    if not calls:
        return None
    if len(calls) == 1:
        return calls[0]
    return lambda: [call() for call in calls] and None


def _round_bfloat16(array):
    from coopsim.tensor_ops import round_bfloat16

    return lambda: round_bfloat16(array)


def _dtype_named(name):
    from coopsim.tensor_ops import DTYPES

    return next(d for d in DTYPES if d._name == name)


def _count(what, ins, outs, p) -> int:
    """Per-rank element count in build_schedule's terms."""
    kind = _KINDS[what]
    if kind in ("all_reduce", "broadcast", "reduce"):
        return ins.size
    if kind in ("all_gather", "gather"):
        return ins.size
    if kind in ("reduce_scatter", "scatter"):
        return outs.size
    return ins.size // p  # all_to_all


def _splits(splits, n_in, n_out, p, what):
    split_in, split_out = splits
    split_in = split_in or [n_in // p] * p
    split_out = split_out or [n_out // p] * p
    for name, s, n in (("input_split_sizes", split_in, n_in), ("output_split_sizes", split_out, n_out)):
        if len(s) != p or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in s) or sum(s) != n:
            raise ValueError(f"{what}: {name} must be {p} non-negative ints summing to {n}, got {s}")
    return split_in, split_out


def _root_member(group, root, what) -> int:
    rank, group_rank = root
    if (rank is None) == (group_rank is None):
        raise ValueError(f"{what}: exactly one of src/dst and group_src/group_dst must be given")
    if group_rank is not None:
        if not 0 <= group_rank < group.size:
            raise ValueError(f"{what}: group rank {group_rank} is not in 0..{group.size - 1}")
        return group_rank
    member = group.member(rank)
    if member < 0:
        raise ValueError(f"{what}: rank {rank} is not part of group {group.name} (ranks {list(group.ranks)})")
    return member


def _op(op, tensor) -> str:
    if not isinstance(op, _RedOp):
        raise ValueError(f"op must be a ctx.distributed.ReduceOp, got {op!r}")
    if op.name in ("BAND", "BOR", "BXOR") and tensor.dtype.is_floating_point:
        raise ValueError(f"Cannot use ReduceOp.{op.name} with {tensor.dtype}")
    return op.name


def _flat(tensor, what: str) -> np.ndarray:
    if not hasattr(tensor, "_storage"):
        raise TypeError(f"{what}: expected a coopsim Tensor, got {type(tensor).__name__}")
    if not tensor.is_contiguous():
        raise ValueError("Tensors must be contiguous")
    return tensor._array.reshape(-1)


def _same_dtype(a, b, what):
    if a.dtype is not b.dtype:
        raise TypeError(f"{what}: output and input must have the same dtype, got {a.dtype} and {b.dtype}")


def _tensor_list(tensors, like, what, name):
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{what}: {name} must be a list of tensors, got {type(tensors).__name__}")
    for t in tensors:
        _flat(t, what)
        if t.dtype is not like.dtype or t.numel() != like.numel():
            raise ValueError(f"{what}: every tensor of {name} must have {like.numel()} elements of "
                             f"{like.dtype}, got {t.numel()} of {t.dtype}")


def _gather_from(tensors, staging):
    """Copy the tensors' data into ``staging`` (at the collective's start)."""
    def prepare():
        off = 0
        for t in tensors:
            n = t.numel()
            staging[off:off + n] = t._array.reshape(-1)
            off += n
    return prepare


def _scatter_into(staging, tensors):
    """Copy ``staging`` into the tensors (at the member's completion)."""
    def finish():
        off = 0
        for t in tensors:
            n = t.numel()
            t._array.reshape(-1)[:] = staging[off:off + n]
            off += n
    return finish


def _timeout_ns(timeout, what) -> float:
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds() * 1e9
    raise TypeError(f"{what}: timeout must be a datetime.timedelta, got {timeout!r}")


def _explain_deadlock(dist: "Distributed", report: dict, tasks) -> None:
    """Add to a deadlock report what the distributed layer knows: for a rank stuck behind a
    collective, the op, group, sequence number, who arrived, who is missing and what the
    missing ranks are doing; for point-to-point, the wait-for cycle."""
    state = dist._spawn_state()
    if state is None:
        return
    rows = report["ranks"]
    by_rank = {row["rank"]: row for row in rows if row["task"] == f"rank {row['rank']}"}
    peers = {}
    seen = set()
    for row, task in zip(rows, tasks):
        if row["state"] != "blocked" or task.owner is not None:
            continue
        h = task.waiting
        p2p = state.p2p.waits_on(h)
        if p2p is not None:
            peers[task.rank] = p2p
            continue
        collective = getattr(h, "collective", None)
        if collective is None and state.pending.get(task.rank):
            collective = state.pending[task.rank][0].done.collective
        if collective is None or collective.state in ("done", "failed"):
            continue
        arrived = sorted(collective.group.ranks[m] for m in collective.arrivals)
        missing = collective.missing()
        row["collective"] = {"op": collective.kind, "group": collective.group.name,
                             "seq": collective.seq, "arrived": arrived, "missing": missing}
        if getattr(h, "collective", None) is not collective:
            row["waits_for"] = f"{row['waits_for']}, behind {collective.name} on its stream"
        if collective.name in seen:
            continue
        seen.add(collective.name)
        line = (f"{collective.name}: arrived {arrived or 'none'}, missing {missing or 'none'}")
        for r in missing:
            other = by_rank.get(r)
            if other is None:
                continue
            if other["state"] == "blocked":
                doing = f"blocked at {other['where']} waiting for {other['waits_for']}"
            else:
                doing = other["state"]
            line += f"\n    rank {r} is {doing}"
        if not missing:
            line += " (all arrived; some stream never reached it)"
        report["details"].append(line)
    for cycle in _cycles(peers):
        chain = " -> ".join(f"rank {r} {peers[r][1].split(' by ')[0]}" for r in cycle)
        report["details"].append(f"point-to-point wait-for cycle: {chain} -> rank {cycle[0]}")
        for r in cycle:
            by_rank[r]["cycle"] = list(cycle)


def _cycles(peers: dict) -> list[list[int]]:
    """Cycles in the graph rank -> the peer it waits for, each once, from its lowest rank."""
    cycles, done = [], set()
    for start in sorted(peers):
        path, r = [], start
        while r in peers and r not in path and r not in done:
            path.append(r)
            r = peers[r][0]
        if r in path:
            cycle = path[path.index(r):]
            low = cycle.index(min(cycle))
            cycles.append(cycle[low:] + cycle[:low])
        done.update(path)
    return cycles

