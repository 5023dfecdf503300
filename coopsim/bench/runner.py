"""The bench's measurement: for one size and placement every rank runs, in one spawn on a
fresh context (docs/adr/0010, "What a time is"):

1. create its buffers (inputs: small integers, so that every expected value is exact);
2. ``-w`` untimed iterations; every rank synchronizes its stream, then a host barrier;
3. ``-n`` timed iterations: the time is the virtual time from the barrier that releases them
   (every stream idle) to the barrier after every rank's stream has finished them, / ``-n``;
4. ``-c`` checks: fresh inputs, one collective, every element of every rank's output compared
   with the expected values.

The host barrier costs no virtual time (nccl-tests' thread barrier). Everything here is host
code, which costs no virtual time either: only the simulated devices and links do.
Only public APIs are used: the torch-shaped context, ``ctx.sim`` and the distributed layer's
``out_of_place`` entry point.
"""

from __future__ import annotations

import gc
import sys

import numpy as np

from coopsim.bench.data import Data
from coopsim.bench.options import OPS, Config
from coopsim.bench.report import PLACEMENTS, column_header, format_row, make_row, section_title
from coopsim.distributed.api import out_of_place
from coopsim.distributed.ccl import load_ccl
from coopsim.distributed.planning import Planner



class HostBarrier:
    """The ranks meet on the host, at no virtual cost (nccl-tests' barrier between threads).

    ``on_release`` (optional) runs once, in the last rank to arrive, at the instant of the
    release: the bench reads the clock and starts or stops the trace there."""

    def __init__(self, ctx, n: int):
        self.ctx, self.n = ctx, n
        self.arrived = 0
        self.event = None

    def wait(self, on_release=None) -> None:
        if self.event is None:
            self.event = self.ctx.sim.event("benchmark host barrier")
        event = self.event
        self.arrived += 1
        if self.arrived == self.n:
            self.arrived, self.event = 0, None
            if on_release is not None:
                on_release()
            event.set()
        self.ctx.wait(event)


class SizeRun:
    """State shared by the ranks while they measure one size and placement (one spawn)."""

    def __init__(self, ctx, cfg: Config, data: Data, size: int, in_place: bool, recorder,
                 state: dict):
        self.ctx, self.cfg, self.data, self.size, self.in_place = ctx, cfg, data, size, in_place
        self.recorder = recorder
        self.state = state  # across the whole run: {"injected": bool}
        self.barrier = HostBarrier(ctx, cfg.nranks)
        self.t0 = self.t1 = None  # virtual ns at the start and the end of the timed iterations
        checked = not (in_place and cfg.collective.name in ("alltoall", "sendrecv"))
        self.wrong = 0 if cfg.check and checked else None  # wrong elements, None: not checked

    def rank_main(self, rank: int) -> None:
        ctx, cfg, barrier = self.ctx, self.cfg, self.barrier
        ctx.distributed.init_process_group("nccl")
        send, recv = self.buffers(rank)
        ctx.cuda.synchronize()
        barrier.wait()
        for _ in range(cfg.warmup):
            self.iteration(rank, send, recv)
        ctx.cuda.synchronize()
        barrier.wait(lambda: self.mark(start=True))
        for _ in range(cfg.iters):
            self.iteration(rank, send, recv)
        ctx.cuda.synchronize()
        barrier.wait(lambda: self.mark(start=False))
        for _ in range(cfg.check if self.wrong is not None else 0):
            self.refill(rank, send, recv)
            ctx.cuda.synchronize()
            barrier.wait()
            self.launch(rank, send, recv)
            wrong = self.count_wrong(rank, recv)  # reads the output: waits (other ranks run)
            self.wrong += wrong
            barrier.wait()
            if self.wrong:
                break  # as nccl-tests: report the first check that failed

    def iteration(self, rank, send, recv) -> None:
        self.launch(rank, send, recv)
        if self.cfg.blocking:
            self.ctx.cuda.synchronize()
            self.barrier.wait()

    def mark(self, start: bool) -> None:
        """At a barrier's release: read the clock; start or stop recording the trace."""
        if start:
            self.t0 = self.ctx.sim.now_ns()
            if self.recorder is not None:
                self.recorder.attach()
        else:
            self.t1 = self.ctx.sim.now_ns()
            if self.recorder is not None:
                self.recorder.detach()

    def buffers(self, rank: int):
        """(send, recv) tensors of ``rank`` with fresh inputs; in place, they alias as NCCL's
        in-place calls do (all_gather: send is recv's own chunk; reduce_scatter: recv is
        send's own chunk; the others: the same tensor)."""
        ctx, cfg, in_place = self.ctx, self.cfg, self.in_place
        c, name = cfg.count(self.size), cfg.collective.name
        if name == "all_gather" and in_place:
            recv = self.data.input_in_output(ctx, rank, c)
            return recv[rank * c:(rank + 1) * c], recv
        send = self.data.input(ctx, rank, cfg.input_elements(self.size))
        if not in_place:
            n_out = c * cfg.nranks if name in ("all_gather", "alltoall") else c
            return send, ctx.zeros(n_out, dtype=cfg.dt(ctx))
        if name == "reduce_scatter":
            return send, send[rank * c:(rank + 1) * c]
        return send, send

    def refill(self, rank: int, send, recv) -> None:
        """Fresh inputs and a zeroed output in the same tensors (device copies), as
        nccl-tests' InitData before a check."""
        ctx, cfg, c = self.ctx, self.cfg, self.cfg.count(self.size)
        in_place = self.in_place
        if in_place and cfg.collective.name == "all_gather":
            recv.copy_(self.data.input_in_output(ctx, rank, c))
            return
        send.copy_(self.data.input(ctx, rank, cfg.input_elements(self.size), as_pattern=True))
        if not in_place:
            recv.zero_()

    def launch(self, rank: int, send, recv) -> None:
        """Enqueue one collective (asynchronous: it runs on the rank's stream)."""
        dist, cfg = self.ctx.distributed, self.cfg
        op = getattr(dist.ReduceOp, OPS[cfg.op])
        name, root, p = cfg.collective.name, cfg.root, cfg.nranks
        if name in ("all_reduce", "broadcast", "reduce") and not self.in_place:
            return out_of_place(dist, name, recv, send, op=op, root=root)
        if name == "all_reduce":
            dist.all_reduce(recv, op=op, async_op=True)
        elif name == "broadcast":
            dist.broadcast(recv, src=root, async_op=True)
        elif name == "reduce":
            dist.reduce(recv, dst=root, op=op, async_op=True)
        elif name == "all_gather":
            dist.all_gather_into_tensor(recv, send, async_op=True)
        elif name == "reduce_scatter":
            dist.reduce_scatter_tensor(recv, send, op=op, async_op=True)
        elif name == "alltoall":
            dist.all_to_all_single(recv, send, async_op=True)
        else:  # sendrecv: send to rank+1, receive from rank-1, as one grouped op
            c = cfg.count(self.size)
            to_next = [c if j == (rank + 1) % p else 0 for j in range(p)]
            from_prev = [c if j == (rank - 1) % p else 0 for j in range(p)]
            dist.all_to_all_single(recv, send, output_split_sizes=from_prev,
                                   input_split_sizes=to_next, async_op=True)

    def count_wrong(self, rank: int, recv) -> int:
        expected = self.data.expected(self.size, rank)
        if expected is None:
            return 0
        got = recv.float().numpy() if self.cfg.dtype == "bfloat16" else recv.numpy()
        if self.cfg.inject_error and not self.state["injected"]:
            self.state["injected"] = True
            got[0] += 1  # the one wrong element the tests look for
        return int(np.count_nonzero(got != expected))


def _rank_main(rank, run: SizeRun):
    run.rank_main(rank)


def measure(ctx, cfg: Config, data: Data, size: int, in_place: bool, recorder, state):
    """Spawn the ranks for one size and placement on ``ctx``; returns (time in us, wrong
    elements or None). ``ctx`` must be fresh: coopsim keeps every collective of a context
    alive, buffers included, until its group's timeout."""
    run = SizeRun(ctx, cfg, data, size, in_place, recorder, state)
    with np.errstate(all="ignore"):  # timed iterations may overflow (inputs are not reset)
        ctx.multiprocessing.spawn(_rank_main, args=(run,), nprocs=cfg.nranks)
    return (run.t1 - run.t0) / cfg.iters / 1e3, run.wrong


def choice(ctx, cfg: Config, size: int) -> tuple[str, str]:
    """The algorithm and protocol that ran a collective of ``size`` (what the planner chose;
    "-" for the protocol where the topology runs none)."""
    kind = cfg.collective.ccl
    algorithm, protocol = Planner(ctx.sim.runtime, ctx.ccl).choose(
        kind, size, list(range(cfg.nranks)), uneven=cfg.collective.name == "sendrecv")[:2]
    return algorithm, getattr(protocol, "name", "-")


def run_section(cfg: Config, data: Data, k: int, algo, state: dict, out, trace_events: list,
                make_context):
    """One table section (one algorithm, or coopsim/configs/ccl.yaml's rules): print and
    return its rows; append the trace events of its timed iterations to ``trace_events`` if
    tracing. ``make_context(topology, ccl=...)`` makes a fresh ``RuntimeContext``."""
    label = algo or "default"
    for line in ["#", section_title(cfg, algo), "#"] + column_header():
        print(line, file=out)
    out.flush()
    ccl = load_ccl({"model": cfg.model, **({"algorithms": {cfg.collective.ccl: algo}} if algo else {}),
                    **({"protocol": cfg.args.proto} if cfg.args.proto else {})})
    progress = sys.stderr.isatty()
    rows, trace_offset_ns = [], 0.0  # each context has its own clock: the trace chains them
    for i, size in enumerate(cfg.sizes):
        if progress:
            sys.stderr.write(f"\r\033[K# {cfg.collective.name} [{label}] {size} B "
                             f"({i + 1} of {len(cfg.sizes)} sizes)")
            sys.stderr.flush()
        results = {}
        for place, in_place in PLACEMENTS:  # a context each, so that memory is freed between
            with make_context(cfg.topology, ccl=ccl) as ctx:
                recorder = ctx.sim.trace(None) if cfg.args.trace else None
                results[place] = measure(ctx, cfg, data, size, in_place, recorder, state)
                chosen = choice(ctx, cfg, size)
                if recorder is not None:
                    trace_events += recorder.events(k * (cfg.topology.num_devices + 1),
                                                    f"{label}: " if len(cfg.algos) > 1 else "",
                                                    trace_offset_ns)
                    trace_offset_ns += ctx.sim.now_ns()
            del ctx, recorder
            if size >= 1 << 20:  # the spawn's greenlets and closures hold the buffers in
                gc.collect()     # cycles: free large ones now (a collection costs 10-100 ms)
        row = make_row(cfg, size, label, results, chosen)
        rows.append(row)
        if progress:
            sys.stderr.write("\r\033[K")
        print(format_row(row), file=out)
        out.flush()
    return rows
