"""nvls in the switch (ADR-0024): the transfer model's run of a collective the switch reduces."""

from __future__ import annotations

import math


class NvlsRun:
    """nvls on the network (ADR-0024): every member streams its bytes up to the switch and the
    switch's results down, both links at once, after the switch's latency; the switch reduces
    (no device time). A member completes when both its transfers have; the numbers are the
    reference ones (the switch reduces in rank order), written at the start, before any member
    completes."""

    def __init__(self, collective, arrivals, plan, reference):
        self.collective = collective
        self.arrivals = arrivals
        self.plan = plan
        self.reference = reference  # execution.reference: the numbers, reduced in rank order

    def start(self) -> None:
        plan = self.plan
        network = self.collective.state.rt.network
        p = len(self.arrivals)
        up_links, down_links, reduction = plan.switch
        efficiency = reduction.efficiency * plan.protocol.bandwidth_efficiency
        whole, part = plan.nbytes, -(-plan.nbytes // p)
        up, down = {"all_reduce": (whole + part, whole + part), "reduce_scatter": (whole, part),
                    "all_gather": (part, whole)}[plan.collective]
        if not self.arrivals[0].hollow:  # timing-only buffers: the time, no numbers (ADR-0020)
            self.reference(plan, self.arrivals)
        for r, arrival in enumerate(self.arrivals):
            left = [2]

            def done(_h, arrival=arrival, left=left):
                left[0] -= 1
                if not left[0]:
                    self.collective.member_done(arrival)

            for link, nbytes, way in ((up_links[r], up, "up"), (down_links[r], down, "down")):
                network.transfer((link,), math.ceil(nbytes / efficiency),
                                 ("{} nvls {}: rank {}", self.collective.name, way, r), on_done=done,
                                 extra_latency_ns=reduction.latency_ns)
