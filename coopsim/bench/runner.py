"""The bench's measurement: for one size and placement every rank runs, in one spawn on a
fresh timing-only context (docs/adr/0010, "What a time is"; docs/adr/0028):

1. create its buffers;
2. ``-w`` untimed iterations; every rank synchronizes its stream, then a host barrier;
3. ``-n`` timed iterations: the time is the virtual time from the barrier that releases them
   (every stream idle) to the barrier after every rank's stream has finished them, / ``-n``;
4. ``-c`` times the check's device work: fresh inputs, one collective, a wait for it.

Times do not depend on values (ADR-0020), so the context holds no data: its tensors are
timing-only and the same ops cost the same time. The values are checked by ``check.Checker``
on a context of their own; step 4 runs here too, without data, so that this context's clock
(and so the chained trace) runs exactly as it would if it did the check itself.

The host barrier costs no virtual time (nccl-tests' thread barrier). Everything here is host
code, which costs no virtual time either: only the simulated devices and links do.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np

from coopsim.bench.calls import HostBarrier, buffers, checked, launch
from coopsim.bench.check import Checker
from coopsim.bench.data import Data, checks_rank
from coopsim.bench.options import Config
from coopsim.bench.report import PLACEMENTS, column_header, format_row, make_row, section_title
from coopsim.distributed.ccl import load_ccl
from coopsim.distributed.planning import Planner


class SizeRun:
    """State shared by the ranks while they time one size and placement (one spawn)."""

    def __init__(self, ctx, cfg: Config, size: int, in_place: bool, recorder):
        self.ctx, self.cfg, self.size, self.in_place = ctx, cfg, size, in_place
        self.recorder = recorder
        self.barrier = HostBarrier(ctx, cfg.nranks)
        self.t0 = self.t1 = None  # virtual ns at the start and the end of the timed iterations

    def rank_main(self, rank: int) -> None:
        ctx, cfg, barrier = self.ctx, self.cfg, self.barrier
        ctx.distributed.init_process_group("nccl")
        dtype = cfg.dt(ctx)
        send, recv = buffers(cfg, self.size, self.in_place, rank,
                             lambda n, _k: ctx.zeros(n, dtype=dtype))  # costs as inputs would
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
        for _ in range(cfg.check if checked(cfg, self.in_place) else 0):
            self.refill(send, recv)
            ctx.cuda.synchronize()
            barrier.wait()
            launch(ctx, cfg, self.size, self.in_place, rank, send, recv)
            if checks_rank(cfg, rank):  # where the check reads the output, as torch would:
                if cfg.dtype == "bfloat16":
                    recv.float()  # bfloat16 through a float32 copy (a device op)
                ctx.cuda.synchronize()
            barrier.wait()

    def iteration(self, rank, send, recv) -> None:
        launch(self.ctx, self.cfg, self.size, self.in_place, rank, send, recv)
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

    def refill(self, send, recv) -> None:
        """The check's fresh inputs and zeroed output, at their cost: a host-made int8 input
        copied into the send buffer (in-place all_gather: an output-sized one, of its type)."""
        ctx = self.ctx
        if self.in_place and self.cfg.collective.name == "all_gather":
            recv.copy_(ctx.zeros(recv.shape[0], dtype=recv.dtype))
            return
        send.copy_(ctx.zeros(send.shape[0], dtype=ctx.int8))
        if not self.in_place:
            recv.zero_()


def _rank_main(rank, run: SizeRun):
    run.rank_main(rank)


def measure(ctx, cfg: Config, size: int, in_place: bool, recorder=None) -> float:
    """Spawn the ranks for one size and placement on ``ctx`` (fresh: timing-only in the
    bench; a context with data gives the same time); returns the time in us."""
    run = SizeRun(ctx, cfg, size, in_place, recorder)
    with np.errstate(all="ignore"):  # with data, timed iterations may overflow (inputs are not reset)
        ctx.multiprocessing.spawn(_rank_main, args=(run,), nprocs=cfg.nranks)
    return (run.t1 - run.t0) / cfg.iters / 1e3


def choice(ctx, cfg: Config, size: int) -> tuple[str, str]:
    """The algorithm and protocol that ran a collective of ``size`` (what the planner chose;
    "-" for the protocol where the topology runs none)."""
    kind = cfg.collective.ccl
    algorithm, protocol = Planner(ctx.sim.runtime, ctx.ccl).choose(
        kind, size, list(range(cfg.nranks)), uneven=cfg.collective.name == "sendrecv")[:2]
    return algorithm, getattr(protocol, "name", "-")


def run_section(cfg: Config, data: Data | None, k: int, algo, state: dict, out,
                trace_events: list, make_context):
    """One table section (one algorithm, or coopsim/configs/ccl.yaml's rules): print and
    return its rows; append the trace events of its timed iterations to ``trace_events`` if
    tracing. ``make_context(topology, ccl=..., timing_only=...)`` makes a fresh
    ``RuntimeContext``: a timing-only one per size and placement, and one with data for the
    section's checks (none with ``-c 0``: then ``data`` is None)."""
    label = algo or "default"
    for line in ["#", section_title(cfg, algo), "#"] + column_header():
        print(line, file=out)
    out.flush()
    ccl = load_ccl({"model": cfg.model, **({"algorithms": {cfg.collective.ccl: algo}} if algo else {}),
                    **({"protocol": cfg.args.proto} if cfg.args.proto else {})})
    with contextlib.ExitStack() as stack:
        checker = None if data is None else Checker(
            stack.enter_context(make_context(cfg.topology, ccl=ccl)), cfg, data, state)
        return _sweep(cfg, k, label, ccl, checker, out, trace_events, make_context)


def _sweep(cfg: Config, k: int, label: str, ccl, checker, out, trace_events: list,
           make_context) -> list:
    progress = sys.stderr.isatty()
    rows, trace_offset_ns = [], 0.0  # each context has its own clock: the trace chains them
    for i, size in enumerate(cfg.sizes):
        if progress:
            sys.stderr.write(f"\r\033[K# {cfg.collective.name} [{label}] {size} B "
                             f"({i + 1} of {len(cfg.sizes)} sizes)")
            sys.stderr.flush()
        results = {}
        for place, in_place in PLACEMENTS:
            with make_context(cfg.topology, ccl=ccl, timing_only=True) as ctx:
                recorder = ctx.sim.trace(None) if cfg.args.trace else None
                time_us = measure(ctx, cfg, size, in_place, recorder)
                chosen = choice(ctx, cfg, size)
                if recorder is not None:
                    trace_events += recorder.events(k * (cfg.topology.num_devices + 1),
                                                    f"{label}: " if len(cfg.algos) > 1 else "",
                                                    trace_offset_ns)
                    trace_offset_ns += ctx.sim.now_ns()
            results[place] = (time_us, None if checker is None else checker.check(size, in_place))
        row = make_row(cfg, size, label, results, chosen)
        rows.append(row)
        if progress:
            sys.stderr.write("\r\033[K")
        print(format_row(row), file=out)
        out.flush()
    return rows
