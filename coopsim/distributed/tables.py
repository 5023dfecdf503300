"""The collective tables, in one place: read by the API, the planner, the schedules, the
analytic model and the benches alike, so that a new collective cannot be missed in a copy."""

from types import MappingProxyType

# The collectives the algorithms implement (ccl.yaml has a rule list for each).
COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce",
               "all_to_all", "gather", "scatter")
# Those with a root (src or dst).
ROOTED = frozenset({"broadcast", "reduce", "gather", "scatter"})
# Those whose input and output are one buffer of the same size on every rank (NCCL's
# in-place calls); the others' message is p chunks of ``count`` elements.
IN_PLACE = frozenset({"all_reduce", "broadcast", "reduce"})
# Those that combine values with a reduce op.
REDUCING = frozenset({"all_reduce", "reduce", "reduce_scatter"})

# torch.distributed call -> the collective that runs it (a barrier is a 1-element all_reduce).
KIND = MappingProxyType({
    "all_reduce": "all_reduce", "broadcast": "broadcast", "reduce": "reduce",
    "all_gather": "all_gather", "all_gather_single": "all_gather",
    "reduce_scatter": "reduce_scatter", "reduce_scatter_single": "reduce_scatter",
    "all_to_all": "all_to_all", "all_to_all_single": "all_to_all", "gather": "gather",
    # the list forms on tensors of different sizes (one broadcast / reduce per rank in PyTorch)
    "all_gather (uneven)": "all_to_all", "reduce_scatter (uneven)": "all_to_all",
    "scatter": "scatter", "barrier": "all_reduce", "monitored_barrier": "all_reduce",
})
