"""The bench's check, ``#wrong`` (docs/adr/0010 "How #wrong is computed", docs/adr/0028): the
values of every size and placement of one table section, on one context with data.

The timed iterations run on timing-only contexts (``runner``): their values are never read.
The check runs here instead, ``-c`` times per size and placement, as nccl-tests' check: fresh
inputs and a zeroed output (device ops), a host barrier, one collective, then every checked
rank reads its whole output (the host-read barrier of C8) and counts the elements that differ
from the expected values (``data``).

Memory: every rank has two buffers of the section's largest size, made at its first check and
reused for every size and placement (views of their first elements: the host touches each
page once), and its pattern, one period, on its device. Inputs are written into the send
buffer by device copies of the pattern; outputs are compared on read-only views, never copied.
"""

from __future__ import annotations

import numpy as np

from coopsim.bench.calls import HostBarrier, buffers, checked, launch
from coopsim.bench.data import Data, count_wrong
from coopsim.bench.options import Config
from coopsim.tensor.host import read_only_view


class Checker:
    """The checks of one section on ``ctx``, a context with data used for nothing else.

    ``state`` is the run's {"injected": bool}: ``--inject-error`` adds 1, on the device, to
    element 0 of the first output checked in the run, after its collective (rank 0's
    out-of-place result of the first size), so that a wrong output must show in ``#wrong``.
    """

    def __init__(self, ctx, cfg: Config, data: Data, state: dict):
        self.ctx, self.cfg, self.data, self.state = ctx, cfg, data, state
        self.buffers: dict = {}  # rank -> (a, b): 1-D tensors of the largest size, reused
        self.patterns: dict = {}  # rank -> its pattern (int8, one period) on its device
        self.wrong = 0  # of the check running now

    def check(self, size: int, in_place: bool) -> int | None:
        """Wrong elements of ``size`` and ``in_place`` over all ranks; None if not checked."""
        if not checked(self.cfg, in_place):
            return None
        self.wrong = 0
        barrier = HostBarrier(self.ctx, self.cfg.nranks)
        with np.errstate(all="ignore"):
            self.ctx.multiprocessing.spawn(_rank_check, args=(self, size, in_place, barrier),
                                           nprocs=self.cfg.nranks)
        return self.wrong

    def rank_check(self, rank: int, size: int, in_place: bool, barrier: HostBarrier) -> None:
        ctx, cfg = self.ctx, self.cfg
        ctx.distributed.init_process_group("nccl")
        if rank not in self.buffers:
            largest = cfg.sizes[-1]
            n = max(cfg.input_elements(largest), cfg.output_elements(largest))
            self.buffers[rank] = (ctx.empty(n, dtype=cfg.dt(ctx)), ctx.empty(n, dtype=cfg.dt(ctx)))
            self.patterns[rank] = ctx.tensor(self.data.patterns[rank])
        own = self.buffers[rank]
        send, recv = buffers(cfg, size, in_place, rank, lambda n, k: own[k][:n])
        expected = self.data.expected(size, rank)
        for _ in range(cfg.check):
            if not in_place or cfg.collective.name == "all_gather":
                recv.zero_()  # before the input: in-place all_gather's input is in recv
            repeat_into(send, self.patterns[rank])
            ctx.cuda.synchronize()
            barrier.wait()
            launch(ctx, cfg, size, in_place, rank, send, recv)
            if expected is not None:
                if cfg.inject_error and not self.state["injected"]:
                    self.state["injected"] = True
                    recv[:1].add_(1)  # the one wrong element the tests look for
                wrong = count_wrong(read_only_view(recv), expected)  # waits (C8): others run
                self.wrong += wrong  # after the wait, not across it
            barrier.wait()
            if self.wrong:
                break  # as nccl-tests: report the first check that failed


def _rank_check(rank, checker: Checker, size: int, in_place: bool, barrier: HostBarrier):
    checker.rank_check(rank, size, in_place, barrier)


def repeat_into(t, pattern) -> None:
    """``t[i] = pattern[i % len(pattern)]`` for the 1-D tensor ``t``: device copies, the
    pattern broadcast over whole periods, cast to ``t``'s type."""
    n, period = t.shape[0], pattern.shape[0]
    whole = n // period * period
    if whole:
        t[:whole].view(whole // period, period).copy_(pattern)
    if whole < n:
        t[whole:].copy_(pattern[:n - whole])
