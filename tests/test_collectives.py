"""Collectives through ``ctx.distributed`` (issue 4: "Algorithms and timing", "Numerics").

- Numerics: every collective and API form x reduce op x dtype x world size x algorithm x timing
  model equals a numpy reference: exactly for integers (and for data movement, min and max),
  for floating-point sums within the bound that ADR-0008 states for the summation order used.
- Timing: on ``fully_connected8`` (every pair one hop, equal links) a collective's virtual
  duration is the ADR-0009 closed form plus one kernel launch: within 1e-9 relative in the
  analytic model, within 1% in the transfer model.
- ``coopsim/configs/ccl.yaml``: size-threshold selection and ``CclConfigError`` for bad values.

Workers only call the API and record what they see; every check runs in main, after spawn.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import numpy as np
import pytest

import coopsim
from coopsim.distributed.algorithms import (
    BUILDERS,
    IN_PLACE,
    ROOTED,
    algorithms_for,
    analytic_time_ns,
    build_schedule,
    exact_multiple,
    run_schedule,
)
from coopsim.distributed.algorithms.halving_doubling import power_of_two_split
from coopsim.distributed.ccl import CclConfigError, load_ccl

IDEAL = "fully_connected8"
MODELS = ("transfer", "analytic")
WORLD_SIZES = (1, 2, 3, 4, 5, 8)
DTYPES = ("float32", "float16", "int32", "int64")
FLOAT_OPS = ("SUM", "AVG", "PRODUCT", "MIN", "MAX")
INT_OPS = FLOAT_OPS + ("BAND", "BOR", "BXOR")
UFUNCS = {"SUM": np.add, "AVG": np.add, "PRODUCT": np.multiply, "MIN": np.minimum,
          "MAX": np.maximum, "BAND": np.bitwise_and, "BOR": np.bitwise_or, "BXOR": np.bitwise_xor}

# The API forms of each collective (the ccl config chooses one algorithm for all of them).
FORMS = {
    "all_reduce": ("all_reduce",),
    "broadcast": ("broadcast",),
    "reduce": ("reduce",),
    "all_gather": ("all_gather", "all_gather_single"),
    "reduce_scatter": ("reduce_scatter", "reduce_scatter_single"),
    "all_to_all": ("all_to_all", "all_to_all_single"),
    "gather": ("gather",),
    "scatter": ("scatter",),
}
KIND = {form: kind for kind, forms in FORMS.items() for form in forms}
REDUCING = ("all_reduce", "reduce", "reduce_scatter")
# Every (collective, algorithm) pair that runs on one node; hierarchical has its own tests.
PAIRS = sorted(pair for pair in BUILDERS if pair[1] != "hierarchical")


def test_the_pairs_under_test_are_those_the_registry_lists():
    for kind in FORMS:
        assert sorted(a for k, a in PAIRS if k == kind) == [  # nvls: tests/test_fidelity.py
            a for a in algorithms_for(kind) if a not in ("hierarchical", "nvls")]
    assert algorithms_for("all_reduce").count("hierarchical") == 1


# ---- running ranks ----------------------------------------------------------------------------


def run(fn, nprocs, *args, topology=IDEAL, ccl=None):
    """Spawn ``fn(rank, ctx, *args)`` on ``nprocs`` ranks in a fresh context."""
    with coopsim.RuntimeContext(topology, ccl=ccl) as ctx:
        ctx.multiprocessing.spawn(fn, args=(ctx, *args), nprocs=nprocs)


def ccl_for(model, **algorithms):
    """Ideal steps even on topologies with NCCL's protocols (cluster_2x8): the closed forms."""
    return {"model": model, "algorithms": algorithms, "protocol": "ideal"}


# ---- cases: one call of one API form, with every rank's input -------------------------------


@dataclass(frozen=True, eq=False)
class Case:
    """One collective call. ``inputs[m]`` is group member m's input: its vector (all_reduce,
    broadcast, reduce), its chunk (all_gather, gather), or its p chunks laid end to end
    (reduce_scatter, all_to_all, scatter: only the root's counts)."""

    form: str
    dtype: str
    op: str | None  # ReduceOp name, for the reducing collectives
    count: int  # elements per rank (in-place collectives) or per chunk
    root: int | None  # group rank
    inputs: np.ndarray  # (p, length)
    group_root: bool = False  # pass the root as group_src/group_dst instead of a global rank

    @property
    def kind(self) -> str:
        return KIND[self.form]

    @property
    def p(self) -> int:
        return len(self.inputs)

    def __repr__(self) -> str:
        return (f"{self.form}(p={self.p}, {self.dtype}, op={self.op}, count={self.count}, "
                f"root={self.root})")


def values(rng, dtype, op, shape):
    """Seeded inputs: small-magnitude floats (float16 sums stay far from overflow), small ints
    for PRODUCT (3^8 fits int32), non-negative ints for AVG (integer AVG of negative sums has
    its own test), wide ints for min/max/bitwise ops."""
    np_dtype = np.dtype(dtype)
    if np.issubdtype(np_dtype, np.integer):
        if op == "PRODUCT":
            return rng.choice([-3, -2, -1, 1, 2, 3], size=shape).astype(np_dtype)
        if op in ("SUM",):
            return rng.integers(-1000, 1000, size=shape).astype(np_dtype)
        if op == "AVG":
            return rng.integers(0, 1000, size=shape).astype(np_dtype)
        return rng.integers(-2**30, 2**30, size=shape).astype(np_dtype)
    if op == "PRODUCT":
        return rng.uniform(0.5, 1.5, size=shape).astype(np_dtype)
    return rng.uniform(-1.0, 1.0, size=shape).astype(np_dtype)


def rng_for(*key):
    """A generator seeded by a stable digest of ``key`` (not ``hash``: PYTHONHASHSEED)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def input_length(form, p, count):
    kind = KIND[form]
    if kind in IN_PLACE or kind in ("all_gather", "gather"):
        return count
    return p * count


def make_case(form, p, dtype, op, count, root, seed, group_root=False) -> Case:
    rng = rng_for(seed, form, p, dtype, op, count, root)
    inputs = values(rng, dtype, op, (p, input_length(form, p, count)))
    return Case(form, dtype, op, count, root, inputs, group_root)


def ops_for(dtype):
    return INT_OPS if np.issubdtype(np.dtype(dtype), np.integer) else FLOAT_OPS


def counts_for(kind, p):
    """For the in-place collectives a vector shorter than p and two that p does not divide
    (p > 1); for the others the per-rank chunk."""
    return (1, 2 * p + 3, 37) if kind in IN_PLACE else (1, 3, 5)


def roots_for(kind, p):
    return sorted({0, p // 2, p - 1}) if kind in ROOTED else [None]


def cases_for(kind, p, seed) -> list[Case]:
    """Every form x dtype x op (reducing collectives) x size x root of ``kind`` on p ranks."""
    cases = []
    for form in FORMS[kind]:
        for dtype in DTYPES:
            for op in ops_for(dtype) if kind in REDUCING else (None,):
                for count in counts_for(kind, p):
                    for root in roots_for(kind, p):
                        cases.append(make_case(form, p, dtype, op, count, root, seed))
    return cases


# ---- a worker that performs cases -----------------------------------------------------------


def prepare(ctx, case: Case, member: int, group=None, ranks=None):
    """Make group member ``member``'s tensors for ``case``. Returns (call, outputs, inputs):
    ``call(async_op)`` performs the collective; ``outputs`` are the tensors that hold this
    rank's result, ``inputs`` the input tensors that must stay untouched."""
    dist = ctx.distributed
    dtype = getattr(ctx, case.dtype)
    x = case.inputs[member]
    p, c = case.p, case.count
    op = getattr(dist.ReduceOp, case.op) if case.op else None
    ranks = list(range(p)) if ranks is None else ranks
    is_root = member == case.root

    def chunk(j):
        return ctx.from_numpy(x[j * c:(j + 1) * c].copy())

    def zeros(n):
        return ctx.zeros(n, dtype=dtype)

    def root(name):
        return {f"group_{name}": case.root} if case.group_root else {name: ranks[case.root]}

    form = case.form
    if form in IN_PLACE:
        t = ctx.from_numpy(x.copy())
        if form == "all_reduce":
            return (lambda a: dist.all_reduce(t, op=op, group=group, async_op=a)), [t], []
        if form == "broadcast":
            return (lambda a: dist.broadcast(t, **root("src"), group=group, async_op=a)), [t], []
        return ((lambda a: dist.reduce(t, op=op, **root("dst"), group=group, async_op=a)),
                [t] if is_root else [], [])
    if form == "all_gather":
        inp, outs = ctx.from_numpy(x.copy()), [zeros(c) for _ in range(p)]
        return (lambda a: dist.all_gather(outs, inp, group=group, async_op=a)), outs, [inp]
    if form == "all_gather_single":
        inp, out = ctx.from_numpy(x.copy()), zeros(p * c)
        return (lambda a: dist.all_gather_single(out, inp, group=group, async_op=a)), [out], [inp]
    if form == "reduce_scatter":
        ins, out = [chunk(j) for j in range(p)], zeros(c)
        return (lambda a: dist.reduce_scatter(out, ins, op=op, group=group, async_op=a)), [out], ins
    if form == "reduce_scatter_single":
        inp, out = ctx.from_numpy(x.copy()), zeros(c)
        return ((lambda a: dist.reduce_scatter_single(out, inp, op=op, group=group, async_op=a)),
                [out], [inp])
    if form == "all_to_all":
        ins, outs = [chunk(j) for j in range(p)], [zeros(c) for _ in range(p)]
        return (lambda a: dist.all_to_all(outs, ins, group=group, async_op=a)), outs, ins
    if form == "all_to_all_single":
        inp, out = ctx.from_numpy(x.copy()), zeros(p * c)
        return (lambda a: dist.all_to_all_single(out, inp, group=group, async_op=a)), [out], [inp]
    if form == "gather":
        inp = ctx.from_numpy(x.copy())
        outs = [zeros(c) for _ in range(p)] if is_root else None
        return ((lambda a: dist.gather(inp, outs, **root("dst"), group=group, async_op=a)),
                outs or [], [inp])
    if form == "scatter":
        out = zeros(c)
        ins = [chunk(j) for j in range(p)] if is_root else None
        return ((lambda a: dist.scatter(out, ins, **root("src"), group=group, async_op=a)),
                [out], ins or [])
    raise AssertionError(form)


def issue(ctx, case: Case, member: int, group=None, ranks=None, async_op=False):
    """Prepare and perform ``case``: returns (the call's return value, outputs, inputs)."""
    call, outputs, inputs = prepare(ctx, case, member, group, ranks)
    return call(async_op), outputs, inputs


def flat(tensors) -> np.ndarray | None:
    """The tensors' values laid end to end (a host read: waits for the device)."""
    if not tensors:
        return None
    return np.concatenate([t.numpy().reshape(-1) for t in tensors])


def cases_worker(rank, ctx, cases, records):
    """Perform every case on WORLD; record (output, input after) per (case index, rank)."""
    ctx.distributed.init_process_group("nccl")
    for i, case in enumerate(cases):
        work, outs, ins = issue(ctx, case, rank)
        assert work is None  # async_op=False
        records[i, rank] = (flat(outs), flat(ins))


# ---- references -----------------------------------------------------------------------------


def summation_depth(algorithm, p, nodes=None):
    """ADR-0008: the most roundings an input passes through on its way to a reduced result."""
    if p == 1:
        return 0
    if algorithm in ("ring", "direct", "rank_order", "nvls"):  # nvls: the switch, in rank order
        return p - 1
    if algorithm == "halving_doubling":
        p2, r = power_of_two_split(p)
        return (p2.bit_length() - 1) + (r > 0)
    if algorithm == "binomial_tree":
        return (p - 1).bit_length()
    if algorithm == "double_binary_tree":
        return 2 * (p - 1).bit_length() - 1
    if algorithm == "hierarchical":
        local = nodes.count(nodes[0])
        return (local - 1) + (p // local - 1)
    raise AssertionError(algorithm)


def loosest_depth(kind, p):
    """The largest summation depth among the algorithms that may run ``kind`` on one node
    (and the analytic model's rank order): for tests that do not fix the algorithm."""
    return max(summation_depth(a, p) for a in algorithms_for(kind) + ["rank_order"]
               if a != "hierarchical")


def integer_average(total, p):
    """NCCL's ncclAvg on integers (what torch's ReduceOp.AVG runs): C division of the sum,
    which truncates toward zero."""
    q = np.abs(total) // p
    return np.where(total < 0, -q, q).astype(total.dtype)


def assert_reduced(result, stacked, op, depth, where):
    """``result`` is the reduction of ``stacked`` (rows = ranks): exact for integers, MIN and
    MAX; for float sums within ADR-0008's ``depth * eps * sum|x|`` (AVG: one more rounding,
    for the division, then / p); for products ``(p-1) * eps * |prod|``."""
    p = len(stacked)
    assert result is not None and result.dtype == stacked.dtype, where
    assert result.shape == stacked.shape[1:], (where, result.shape)
    if np.issubdtype(stacked.dtype, np.integer) or op in ("MIN", "MAX"):
        expected = functools.reduce(UFUNCS[op], stacked)
        if op == "AVG":
            expected = integer_average(expected, p)
        assert np.array_equal(result, expected), (where, result, expected)
        return
    exact = stacked.astype(np.float64)
    eps = float(np.finfo(stacked.dtype).eps)
    magnitude = np.abs(exact).sum(axis=0)
    if op == "SUM":
        expected, tolerance = exact.sum(axis=0), depth * eps * magnitude
    elif op == "AVG":
        expected, tolerance = exact.sum(axis=0) / p, (depth + 1) * eps * magnitude / p
    else:
        expected = exact.prod(axis=0)
        tolerance = (p - 1) * eps * np.abs(expected)
    error = np.abs(result.astype(np.float64) - expected)
    assert np.all(error <= tolerance), (where, float(error.max()), float(tolerance.max()))


def schedule_outputs(case: Case, algorithm, nodes=None):
    """What ADR-0008's reference executor ``run_schedule`` computes for ``case``: the transfer
    model must produce these bits (the semantics are normative for every executor)."""
    p, c, kind = case.p, case.count, case.kind
    schedule = build_schedule(kind, algorithm, p, c, root=case.root if kind in ROOTED else None,
                              nodes=nodes)
    ufunc = UFUNCS[case.op]
    if kind in IN_PLACE:
        outs = [x.copy() for x in case.inputs]
        run_schedule(schedule, outs, outs, ufunc)
    else:
        outs = [np.zeros(schedule.out_count, dtype=case.inputs.dtype) for _ in range(p)]
        run_schedule(schedule, [x.copy() for x in case.inputs], outs, ufunc)
    if case.op == "AVG":
        if np.issubdtype(case.inputs.dtype, np.integer):
            outs = [integer_average(o, p) for o in outs]
        else:
            outs = [o / p for o in outs]
    return outs


def check_case(case: Case, outputs, inputs_after, where, depth, schedule=None):
    """Check one case's outputs (member -> flat array, None where the rank has no output).
    ``schedule``: ``schedule_outputs(...)`` to match bit for bit, or None."""
    p, c, kind, x = case.p, case.count, case.kind, case.inputs
    for m in range(p):  # out-of-place forms leave their inputs alone (as torch)
        if inputs_after[m] is not None:
            assert inputs_after[m].tobytes() == x[m].tobytes(), (where, "input written", m)
    if kind in REDUCING:
        holders = {"all_reduce": range(p), "reduce": [case.root], "reduce_scatter": range(p)}[kind]
        for m in holders:
            block = x[:, m * c:(m + 1) * c] if kind == "reduce_scatter" else x
            assert_reduced(outputs[m], block, case.op, depth, (where, "member", m))
            if schedule is not None:
                assert outputs[m].tobytes() == schedule[m][:outputs[m].size].tobytes(), (
                    where, "member", m, "differs from run_schedule", outputs[m], schedule[m])
        if kind == "all_reduce":  # every rank the same bits (ADR-0008)
            for m in range(1, p):
                assert outputs[m].tobytes() == outputs[0].tobytes(), (where, "member", m)
        return
    if kind == "broadcast":
        expected = {m: x[case.root] for m in range(p)}
    elif kind == "all_gather":
        expected = {m: x.reshape(-1) for m in range(p)}
    elif kind == "gather":
        expected = {case.root: x.reshape(-1)}
        for m in range(p):
            if m != case.root:
                assert outputs[m] is None, where
    elif kind == "scatter":
        expected = {m: x[case.root, m * c:(m + 1) * c] for m in range(p)}
    else:  # all_to_all: chunk j of member i's input is chunk i of member j's output
        blocks = x.reshape(p, p, c)
        expected = {j: blocks[:, j, :].reshape(-1) for j in range(p)}
    for m, want in expected.items():
        assert outputs[m] is not None and outputs[m].dtype == want.dtype, (where, m)
        assert outputs[m].tobytes() == want.tobytes(), (where, "member", m, outputs[m], want)


def check_all(cases, records, algorithm, model, ranks_of=None, nodes_of=None, label=""):
    """Check every case; ``ranks_of(i)``: the global ranks of case i's group (default WORLD),
    ``nodes_of(i)``: their node ids (hierarchical)."""
    for i, case in enumerate(cases):
        ranks = ranks_of(i) if ranks_of else range(case.p)
        nodes = nodes_of(i) if nodes_of else None
        outputs = [records[i, r][0] for r in ranks]
        inputs_after = [records[i, r][1] for r in ranks]
        where = (label, model, algorithm, case)
        if model == "analytic":  # the analytic model reduces in rank order (collective.reference)
            depth, schedule = summation_depth("rank_order", case.p), None
        else:
            depth = summation_depth(algorithm, case.p, nodes)
            schedule = (schedule_outputs(case, algorithm, nodes)
                        if case.kind in REDUCING and case.p > 1 else None)
        check_case(case, outputs, inputs_after, where, depth, schedule)


# ---- 1. numerics ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("collective, algorithm", PAIRS)
def test_results_match_numpy(collective, algorithm, model):
    """Every form x op x dtype x size x root of ``collective`` by ``algorithm``, on world sizes
    1, 2, 3, 4, 5 and 8, in one model: equal to numpy (see ``assert_reduced``); in the transfer
    model also bit for bit what ``run_schedule`` computes for the algorithm's schedule."""
    for p in WORLD_SIZES:
        cases = cases_for(collective, p, seed=("numerics", algorithm))
        records = {}
        run(cases_worker, p, cases, records, ccl=ccl_for(model, **{collective: algorithm}))
        check_all(cases, records, algorithm, model, label=f"p={p}")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("algorithm", ["binomial_tree", "double_binary_tree", "direct"])
@pytest.mark.parametrize("backend", ["nccl", "gloo"])
def test_reduce_leaves_the_other_ranks_tensors_as_they_were(algorithm, model, backend):
    # torch.distributed.reduce: "Only the process with rank dst is going to receive the final
    # result"; ncclReduce writes recvbuff on the root only (the tree's partial sums on the way
    # must not show in the other ranks' tensors)
    seen = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group(backend)
        t = ctx.arange(6, dtype=ctx.float32) + 10 * rank
        dist.reduce(t, dst=2)
        seen[rank] = t.tolist()

    with coopsim.RuntimeContext(IDEAL, ccl={"model": model, "algorithms": {"reduce": algorithm}}) as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=8)
    inputs = [[float(i + 10 * r) for i in range(6)] for r in range(8)]
    assert seen[2] == [float(sum(col)) for col in zip(*inputs)]
    assert {r: seen[r] for r in seen if r != 2} == {r: inputs[r] for r in range(8) if r != 2}


@pytest.mark.parametrize("model", MODELS)
def test_hierarchical_all_reduce_on_two_nodes(model):
    """cluster_2x8 (devices 0-7 on node 0, 8-15 on node 1), 16 ranks: hierarchical all_reduce
    on WORLD and on sub-groups with equal ranks per node (contiguous and strided, 1 to 8 per
    node); every op and dtype, a vector shorter than p and one p does not divide."""
    groups = [list(range(16)), [0, 1, 8, 9], [2, 5, 10, 13], [3, 11], [0, 1, 2, 8, 9, 10]]
    cases, group_of = [], []
    for g, ranks in enumerate(groups):
        p = len(ranks)
        for dtype in DTYPES:
            for op in ops_for(dtype):
                for count in (1, 2 * p + 3):
                    cases.append(make_case("all_reduce", p, dtype, op, count, None, ("hier", g)))
                    group_of.append(g)
    records = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        handles = [None] + [dist.new_group(ranks) for ranks in groups[1:]]
        for i, case in enumerate(cases):
            ranks = groups[group_of[i]]
            if rank not in ranks:
                assert handles[group_of[i]] is dist.GroupMember.NON_GROUP_MEMBER
                continue
            _, outs, ins = issue(ctx, case, ranks.index(rank), handles[group_of[i]], ranks)
            records[i, rank] = (flat(outs), flat(ins))

    run(worker, 16, topology="cluster_2x8",
        ccl=ccl_for(model, all_reduce=[{"algorithm": "hierarchical"}, {"algorithm": "ring"}]))
    check_all(cases, records, "hierarchical", model, label="cluster_2x8",
              ranks_of=lambda i: groups[group_of[i]],
              nodes_of=lambda i: [r // 8 for r in groups[group_of[i]]])


def test_integer_avg_truncates_toward_zero_as_nccl():
    """torch runs ReduceOp.AVG as NCCL's ncclAvg, which divides the integer sum with C
    semantics (truncation toward zero): sums -5 and -7 on 2 ranks average to -2 and -3.
    coopsim divides with Python's floor division (-3 and -4)."""
    results = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        t = ctx.tensor([-5, -7, 5, 7] if rank == 0 else [0, 0, 0, 0], dtype=ctx.int32)
        dist.all_reduce(t, op=dist.ReduceOp.AVG)
        out = ctx.zeros(2, dtype=ctx.int64)
        dist.reduce_scatter_single(out, ctx.tensor([-5, -7, 5, 7] if rank == 0 else [0, 0, 0, 0],
                                                   dtype=ctx.int64), op=dist.ReduceOp.AVG)
        results[rank] = (t.tolist(), out.tolist())

    for model in MODELS:
        run(worker, 2, ccl={"model": model})
        assert results == {0: ([-2, -3, 2, 3], [-2, -3]), 1: ([-2, -3, 2, 3], [2, 3])}, model


def test_sub_group_of_three_of_five_ranks():
    """new_group([1, 3, 4]) of 5 ranks, in both models and two algorithm choices: every form
    on the group (roots given as a global rank and as a group rank), interleaved with WORLD
    collectives; ranks 0 and 2 get NON_GROUP_MEMBER, rank/size -1, and every call returns None
    without touching their tensors."""
    members = [1, 3, 4]
    alternatives = {"all_reduce": "double_binary_tree", "broadcast": "ring", "reduce": "direct",
                    "all_gather": "halving_doubling", "reduce_scatter": "halving_doubling",
                    "gather": "binomial_tree", "scatter": "binomial_tree"}
    cases = []
    for form in KIND:
        kind = KIND[form]
        for dtype in ("float32", "int64"):
            for op in (("SUM", "MAX", "BXOR") if dtype == "int64" else ("SUM", "AVG"))\
                    if kind in REDUCING else (None,):
                for root, group_root in ((2, False), (1, True)) if kind in ROOTED else ((None, False),):
                    cases.append(make_case(form, 3, dtype, op, 5 if kind in IN_PLACE else 2,
                                           root, "group", group_root=group_root))
    world_case = make_case("all_reduce", 5, "int64", "SUM", 7, None, "world")

    for model in MODELS:
        for algorithms in ({}, alternatives):
            records, seen = {}, {}

            def worker(rank, ctx):
                dist = ctx.distributed
                dist.init_process_group()
                group = dist.new_group(members)
                seen[rank] = (dist.get_rank(group), dist.get_world_size(group))
                for i, case in enumerate(cases):
                    if rank in members:
                        _, outs, ins = issue(ctx, case, members.index(rank), group, members)
                        records[i, rank] = (flat(outs), flat(ins))
                    else:
                        assert group is dist.GroupMember.NON_GROUP_MEMBER
                        before = ctx.tensor([rank] * 6, dtype=ctx.int64)
                        calls = [dist.all_reduce(before, group=group),
                                 dist.broadcast(before, src=1, group=group),
                                 dist.reduce(before, dst=1, group=group, async_op=True),
                                 dist.all_gather([before] * 3, before, group=group),
                                 dist.all_gather_single(before, before, group=group),
                                 dist.reduce_scatter_single(before, before, group=group),
                                 dist.all_to_all_single(before, before, group=group),
                                 dist.gather(before, None, dst=1, group=group),
                                 dist.scatter(before, None, src=1, group=group),
                                 dist.barrier(group=group)]
                        assert calls == [None] * len(calls), calls
                        assert before.tolist() == [rank] * 6
                    if i % 4 == 0:  # WORLD collectives in between
                        _, outs, _ = issue(ctx, world_case, rank)
                        records["world", i, rank] = flat(outs)

            run(worker, 5, ccl=ccl_for(model, **algorithms))
            assert seen == {0: (-1, -1), 1: (0, 3), 2: (-1, -1), 3: (1, 3), 4: (2, 3)}
            world = functools.reduce(np.add, world_case.inputs)
            for key, value in records.items():
                if key[0] == "world":
                    assert np.array_equal(value, world), (model, key)
            for i, case in enumerate(cases):
                outputs = [records[i, r][0] for r in members]
                inputs_after = [records[i, r][1] for r in members]
                check_case(case, outputs, inputs_after, (model, algorithms, case),
                           loosest_depth(case.kind, 3))


@pytest.mark.parametrize("model", MODELS)
def test_async_forms_return_work(model):
    """async_op=True on every form: a Work that is not completed when the call returns (the op
    is device work), then wait() -> True, is_completed(), is_success(), exception() None, and
    the results are right. Several ops issued back to back complete in stream order. An nccl
    Work's wait() orders the current stream and returns at once (``WorkNCCL::wait``); the
    barrier's wait() blocks the host until the stream, and so every op before it, is done."""
    p = 4
    cases = [make_case(form, p, dtype, "SUM" if KIND[form] in REDUCING else None,
                       6 if KIND[form] in IN_PLACE else 2, 1 if KIND[form] in ROOTED else None,
                       "async")
             for form in KIND for dtype in ("float32", "int32")]
    records, states = {}, {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        issued = []
        for i, case in enumerate(cases):
            work, outs, ins = issue(ctx, case, rank, async_op=True)
            assert isinstance(work, dist.Work)
            states[i, rank, "issued"] = work.is_completed()
            issued.append((i, work, outs, ins))
        barrier = dist.barrier(async_op=True)
        states["barrier", rank] = barrier.is_completed()
        before_ns = ctx.sim.now_ns()
        assert issued[-1][1].wait() is True
        states["host went on", rank] = (ctx.sim.now_ns() == before_ns, issued[-1][1].is_completed())
        assert barrier.wait() is True and barrier.is_completed()
        for i, work, outs, ins in issued:
            states[i, rank, "after"] = (work.is_completed(), work.is_success(), work.exception())
            records[i, rank] = (flat(outs), flat(ins))

    run(worker, p, ccl={"model": model})
    for i, case in enumerate(cases):
        for r in range(p):
            assert states[i, r, "issued"] is False, (case, r)
            assert states[i, r, "after"] == (True, True, None), (case, r)
    assert all(states["barrier", r] is False for r in range(p))
    assert all(states["host went on", r] == (True, False) for r in range(p))
    for i, case in enumerate(cases):
        check_case(case, [records[i, r][0] for r in range(p)],
                   [records[i, r][1] for r in range(p)], (model, case), loosest_depth(case.kind, p))


def a2a_splits_worker(rank, ctx, splits_in, records):
    dist = ctx.distributed
    dist.init_process_group()
    si = splits_in[rank]
    so = [splits_in[i][rank] for i in range(len(splits_in))]
    inp = ctx.tensor((np.arange(sum(si)) + 100 * rank).tolist(), dtype=ctx.int32)
    out = ctx.full((sum(so),), -1, dtype=ctx.int32)
    dist.all_to_all_single(out, inp, output_split_sizes=so, input_split_sizes=si)
    records[rank] = out.tolist()


def expected_a2a(splits_in):
    """Rank i's input is 100 i + 0, 1, ...; its block j (splits_in[i][j] elements) goes to j."""
    p = len(splits_in)
    blocks = []
    for i in range(p):
        offs = np.concatenate(([0], np.cumsum(splits_in[i]))).astype(int)
        blocks.append([list(range(100 * i + offs[j], 100 * i + offs[j + 1])) for j in range(p)])
    return {j: [v for i in range(p) for v in blocks[i][j]] for j in range(p)}


@pytest.mark.parametrize("model", MODELS)
def test_all_to_all_single_with_uneven_split_sizes(model):
    """all_to_all_single with input/output split sizes (empty blocks included). The analytic
    model's data path (collective.reference) splits every input in p equal parts and ignores
    the split sizes: ValueError "array split does not result in an equal division"."""
    splits = [[1, 2, 0], [0, 1, 3], [2, 2, 1]]
    records = {}
    run(a2a_splits_worker, 3, splits, records, ccl={"model": model})
    assert records == expected_a2a(splits)


@pytest.mark.parametrize("model", MODELS)
def test_all_to_all_single_when_rank_0_sends_fewer_elements_than_ranks(model):
    """Rank 0 sends 1 element in all, the others 3 each: DistState.plan takes the element
    count from rank 0's fingerprint (1 // 3 == 0) and treats the collective as "nothing to
    move" (_single_rank), which copies each input onto its output of a different size."""
    splits = [[1, 0, 0], [1, 1, 1], [1, 1, 1]]
    records = {}
    run(a2a_splits_worker, 3, splits, records, ccl={"model": model})
    assert records == expected_a2a(splits)


def test_empty_tensors_and_single_rank_groups_complete():
    """Zero elements on 3 ranks, and every form on a group of one rank, complete and leave
    the data as the definition says (a one-rank group's output is its input)."""
    records = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        solo = [dist.new_group([r]) for r in range(3)][rank]
        empty = ctx.zeros(0)
        dist.all_reduce(empty)
        dist.broadcast(empty, src=2)
        out = ctx.zeros(0)
        dist.all_gather_single(out, empty)
        records[rank, "empty"] = (empty.tolist(), out.tolist())
        for i, form in enumerate(KIND):
            case = make_case(form, 1, "float32", "SUM" if KIND[form] in REDUCING else None, 4,
                             0 if KIND[form] in ROOTED else None, ("solo", rank))
            _, outs, _ = issue(ctx, case, 0, solo, [rank])
            records[rank, form] = (flat(outs), case.inputs[0])

    run(worker, 3)
    for key, value in records.items():
        if key[1] == "empty":
            assert value == ([], []), key
        else:
            assert value[0].tobytes() == value[1].tobytes(), key


# ---- 2. timing on the ideal topology -----------------------------------------------------------

SPACING_NS = 1e7  # each timed collective starts at (k + 1) * SPACING_NS of virtual time


def plan_parameters(ctx, devices):
    """alpha, beta, gamma exactly as coopsim/distributed/api.py DistState.plan derives them:
    alpha = the largest route latency and beta = the largest 1 / bottleneck bandwidth
    (ns per byte: GB/s is bytes per ns) between ring neighbours of the group's devices;
    gamma = 3 / memory_bandwidth_GBps of the first device's kind (a reduction reads two
    bytes and writes one)."""
    alpha = beta = 0.0
    for a, b in zip(devices, devices[1:] + devices[:1]):
        if a != b:
            route = ctx.topology.route(a, b)
            alpha = max(alpha, sum(link.latency_ns for link in route))
            beta = max(beta, 1.0 / min(link.bandwidth_GBps for link in route))
    gamma = 3.0 / ctx.sim.runtime.devices[devices[0]].kind.memory_bandwidth_GBps
    return alpha, beta, gamma


def timed_worker(rank, ctx, timed, records):
    """For each (form, dtype, count, root): make the tensors, then every rank enqueues the
    collective at the same virtual time ((k + 1) * SPACING_NS, on an idle stream) and waits
    for it; record (start, completion) and, on every rank, cuda.Event elapsed_time around it."""
    dist = ctx.distributed
    dist.init_process_group()
    p = dist.get_world_size()
    for k, (form, dtype, count, root) in enumerate(timed):
        case = Case(form, dtype, "SUM" if KIND[form] in REDUCING else None, count, root,
                    np.ones((p, input_length(form, p, count)), dtype=dtype))
        call, _, _ = prepare(ctx, case, rank)
        dist.barrier()
        ctx.cuda.synchronize()
        start_at = (k + 1) * SPACING_NS
        assert ctx.sim.now_ns() < start_at
        ctx.wait(ctx.sim.timer(start_at - ctx.sim.now_ns()))
        begin, end = ctx.cuda.Event(enable_timing=True), ctx.cuda.Event(enable_timing=True)
        start = ctx.sim.now_ns()
        begin.record()
        work = call(True)
        work.wait()  # nccl: the current stream waits for the collective, the host goes on
        end.record()
        end.synchronize()  # the host waits for the event, which follows the collective
        records[k, rank] = (start, ctx.sim.now_ns())
        records[k, rank, "event_ms"] = begin.elapsed_time(end)


def measured(records, k, p):
    """(start, duration) of timed collective k: it starts when the last rank enqueues it and
    ends when the last rank's part completes (what the closed forms describe)."""
    starts = [records[k, r][0] for r in range(p)]
    assert max(starts) - min(starts) < 1e-6, starts  # all ranks enqueued it together
    return max(starts), max(records[k, r][1] for r in range(p)) - max(starts)


def timing_sizes(collective, algorithm, p):
    """(dtype, count) pairs whose vector splits evenly (``exact_multiple``): one small
    (latency-bound) and one large (bandwidth-bound) message, in two item sizes."""
    m = exact_multiple(collective, algorithm, p)
    if collective in IN_PLACE:
        return [("float32", 8 * m), ("float16", 1 << 15 if m == 1 else (1 << 15) // m * m)]
    return [("float32", 4), ("float16", 1 << 14)]


def message_bytes(collective, p, count, itemsize):
    """ADR-0009's n: the vector for all_reduce/broadcast/reduce, else p * count * itemsize."""
    return count * itemsize * (1 if collective in IN_PLACE else p)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("collective, algorithm", PAIRS)
def test_virtual_time_is_the_closed_form_on_an_ideal_topology(collective, algorithm, model):
    """Each form of the collective, p in 1, 2, 3, 4, 8, two even sizes, roots 0 and p - 1:
    duration == analytic_time_ns + one kernel launch, within 1e-9 relative (analytic) or 1%
    (transfer); p = 1 costs the launch only. cuda.Event around the call on each rank measures
    that rank's part, which ends no later than the collective."""
    tolerance = 1e-9 if model == "analytic" else 1e-2
    for p in (1, 2, 3, 4, 8):
        timed = [(form, dtype, count, root)
                 for form in FORMS[collective]
                 for dtype, count in timing_sizes(collective, algorithm, p)
                 for root in (sorted({0, p - 1}) if collective in ROOTED else [None])]
        records = {}
        with coopsim.RuntimeContext(IDEAL, ccl=ccl_for(model, **{collective: algorithm})) as ctx:
            ctx.multiprocessing.spawn(timed_worker, args=(ctx, timed, records), nprocs=p)
            alpha, beta, gamma = plan_parameters(ctx, list(range(p)))
            launch = ctx.sim.runtime.devices[0].kind.launch_overhead_ns
        assert (alpha, beta, gamma) == ((700.0, 1 / 50, 3 / 1000) if p > 1 else (0.0, 0.0, 0.003))
        for k, (form, dtype, count, root) in enumerate(timed):
            nbytes = message_bytes(collective, p, count, np.dtype(dtype).itemsize)
            want = launch + analytic_time_ns(collective, algorithm, p, nbytes, alpha, beta, gamma)
            start, got = measured(records, k, p)
            where = (model, form, algorithm, p, dtype, count, root, got, want)
            assert abs(got - want) <= tolerance * want, where
            for r in range(p):
                part_ns = records[k, r][1] - start
                event_ms = records[k, r, "event_ms"]
                assert event_ms == pytest.approx(part_ns / 1e6, rel=1e-9, abs=1e-12), (where, r)
                assert part_ns <= got
            if model == "analytic":  # one closed form: every rank completes at the same time
                assert all(records[k, r][1] == records[k, 0][1] for r in range(p)), where


@pytest.mark.parametrize("collective, algorithm", [
    pair for pair in PAIRS if pair[0] in IN_PLACE and max(
        exact_multiple(*pair, p) for p in (2, 3, 4, 8)) > 1])
def test_uneven_vectors_take_between_the_formulas_at_the_neighbouring_even_sizes(
        collective, algorithm):
    """Transfer model, n = 8m + 1 elements (m = exact_multiple, > 1): uneven chunks; the time
    lies between the closed form at 8m and at 9m elements (ADR-0009), and the analytic model
    charges the closed form at n itself."""
    for p in (2, 3, 4, 8):
        m = exact_multiple(collective, algorithm, p)
        if m == 1:
            continue
        n = 8 * m + 1
        root = p - 1 if collective in ROOTED else None
        durations = {}
        for model in MODELS:
            records = {}
            run(timed_worker, p, [(collective, "float32", n, root)], records,
                ccl=ccl_for(model, **{collective: algorithm}))
            durations[model] = measured(records, 0, p)[1]

        def formula(count):
            return 4000 + analytic_time_ns(collective, algorithm, p, 4 * count, 700, 1 / 50, 3 / 1000)

        where = (collective, algorithm, p, n, durations)
        assert formula(8 * m) <= durations["transfer"] * (1 + 1e-12), where
        assert durations["transfer"] <= formula(9 * m) * (1 + 1e-12), where
        assert durations["analytic"] == pytest.approx(formula(n), rel=1e-9), where


@pytest.mark.parametrize("model", MODELS)
def test_concurrent_collectives_on_disjoint_sub_groups_each_take_their_closed_form(model):
    """fully_connected8, ring all_reduce on [1, 3, 4] and on [0, 2, 5, 6] at the same virtual
    time: disjoint links, so each group takes its own closed form (p = 3 and p = 4)."""
    groups = ([1, 3, 4], [0, 2, 5, 6])
    n = 1200
    results = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        handles = [dist.new_group(g) for g in groups]
        mine = next(h for h, g in zip(handles, groups) if rank in g)
        t = ctx.ones(n) * (rank + 1)
        dist.barrier()
        ctx.cuda.synchronize()
        ctx.wait(ctx.sim.timer(SPACING_NS - ctx.sim.now_ns()))
        dist.all_reduce(t, group=mine, async_op=True).wait()
        ctx.cuda.synchronize()  # nccl: wait() orders the stream; the host waits here
        results[rank] = (ctx.sim.now_ns() - SPACING_NS, t.numpy())

    run(worker, 7, ccl=ccl_for(model, all_reduce="ring"))
    for ranks in groups:
        want = 4000 + analytic_time_ns("all_reduce", "ring", len(ranks), 4 * n, 700, 1 / 50, 3 / 1000)
        for r in ranks:
            took, values_ = results[r]
            assert took == pytest.approx(want, rel=1e-9 if model == "analytic" else 1e-2), (ranks, r)
            assert np.array_equal(values_, np.full(n, sum(ranks) + len(ranks), np.float32))


def test_hierarchical_time_in_the_analytic_model_is_its_closed_form():
    """cluster_2x8, analytic model: hierarchical all_reduce on 16 ranks and on [0, 1, 8, 9]
    takes analytic_time_ns('hierarchical', ..., nodes) + a launch, with DistState.plan's
    alpha/beta (the slowest route between ring neighbours: here the inter-node one)."""
    groups = [list(range(16)), [0, 1, 8, 9], [2, 5, 10, 13]]
    results = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        handles = [None] + [dist.new_group(g) for g in groups[1:]]
        for k, ranks in enumerate(groups):
            t = ctx.ones(4 * 16 * 8)
            dist.barrier()
            ctx.cuda.synchronize()
            ctx.wait(ctx.sim.timer((k + 1) * SPACING_NS - ctx.sim.now_ns()))
            if rank in ranks:
                start = ctx.sim.now_ns()
                dist.all_reduce(t, group=handles[k], async_op=True).wait()
                ctx.cuda.synchronize()  # nccl: wait() orders the stream; the host waits here
                results[k, rank] = (start, ctx.sim.now_ns())

    with coopsim.RuntimeContext("cluster_2x8", ccl=ccl_for(
            "analytic", all_reduce=[{"algorithm": "hierarchical"}, {"algorithm": "ring"}])) as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=16)
        for k, ranks in enumerate(groups):
            alpha, beta, gamma = plan_parameters(ctx, ranks)
            nodes = [ctx.topology.devices[r].node for r in ranks]
            want = ctx.sim.runtime.devices[0].kind.launch_overhead_ns + analytic_time_ns(
                "all_reduce", "hierarchical", len(ranks), 4 * 16 * 8 * 4, alpha, beta, gamma, nodes)
            ring = ctx.sim.runtime.devices[0].kind.launch_overhead_ns + analytic_time_ns(
                "all_reduce", "ring", len(ranks), 4 * 16 * 8 * 4, alpha, beta, gamma)
            start = max(results[k, r][0] for r in ranks)
            got = max(results[k, r][1] for r in ranks) - start
            assert got == pytest.approx(want, rel=1e-9), (ranks, got, want)
            assert got != pytest.approx(ring, rel=1e-3), ranks


def test_hierarchical_time_in_the_transfer_model_follows_each_level():
    """cluster_2x8, transfer model, 16 ranks: the intra-node phases run on NVSwitch routes
    (100 + 100 + 100 ns, 360 GB/s) and the inter-node ring on the NICs (2000 + 2000 + 500 ns,
    41.25 GB/s), without contention (one NIC per GPU, one up- and one down-link per GPU): the
    time is ADR-0009's hierarchical formula with each phase's own alpha and beta, within 1%."""
    n = 1 << 16
    results = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        t = ctx.ones(n)
        dist.barrier()
        ctx.cuda.synchronize()
        ctx.wait(ctx.sim.timer(SPACING_NS - ctx.sim.now_ns()))
        start = ctx.sim.now_ns()
        dist.all_reduce(t, async_op=True).wait()
        ctx.cuda.synchronize()  # nccl: wait() orders the stream; the host waits here
        results[rank] = (start, ctx.sim.now_ns(), t[0].item())

    with coopsim.RuntimeContext("cluster_2x8", ccl=ccl_for(
            "transfer", all_reduce=[{"algorithm": "hierarchical"}, {"algorithm": "ring"}])) as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=16)
        a_in, b_in, gamma = plan_parameters(ctx, list(range(8)))
        a_x, b_x, _ = plan_parameters(ctx, [0, 8])
        launch = ctx.sim.runtime.devices[0].kind.launch_overhead_ns
    assert (a_in, a_x) == (300.0, 4500.0) and (1 / b_in, 1 / b_x) == pytest.approx((360, 41.25))
    local, c = 8, n * 4 / 8
    want = (launch + (local - 1) * (a_in + c * (b_in + gamma)) + (local - 1) * (a_in + c * b_in)
            + analytic_time_ns("all_reduce", "ring", 2, c, a_x, b_x, gamma))
    start = max(s for s, _, _ in results.values())
    got = max(e for _, e, _ in results.values()) - start
    assert {v for _, _, v in results.values()} == {16.0}
    assert got == pytest.approx(want, rel=1e-2), (got, want)


def test_c9_collective_results_and_times_are_deterministic():
    """C9: the same program twice (in each model) gives the same values bit for bit and the
    same virtual times: float sums by several algorithms, a sub-group, async ops, uneven
    all_to_all_single (transfer model), p2p-free."""
    def program(model):
        log = {}

        def worker(rank, ctx):
            dist = ctx.distributed
            dist.init_process_group()
            group = dist.new_group([0, 2, 3])
            rng = np.random.default_rng(rank)
            for i in range(3):
                t = ctx.from_numpy(rng.standard_normal(37).astype(np.float32))
                dist.all_reduce(t)
                log[rank, i, "all_reduce"] = (t.numpy().tobytes(), ctx.sim.now_ns())
                out = ctx.zeros(9, dtype=ctx.float16)
                work = dist.reduce_scatter_single(
                    out, ctx.from_numpy(rng.standard_normal(36).astype(np.float16)), async_op=True)
                work.wait()
                log[rank, i, "reduce_scatter"] = (out.numpy().tobytes(), ctx.sim.now_ns())
                if group is not dist.GroupMember.NON_GROUP_MEMBER:
                    u = ctx.from_numpy(rng.standard_normal(11).astype(np.float32))
                    dist.reduce(u, dst=3, group=group, op=dist.ReduceOp.AVG)
                    dist.broadcast(u, src=3, group=group)
                    log[rank, i, "group"] = (u.numpy().tobytes(), ctx.sim.now_ns())
                if model == "transfer":
                    si = [(rank + j) % 3 + 1 for j in range(4)]
                    so = [(i2 + rank) % 3 + 1 for i2 in range(4)]
                    a = ctx.zeros(sum(so))
                    dist.all_to_all_single(a, ctx.ones(sum(si)) * rank, so, si)
                    log[rank, i, "a2a"] = (a.numpy().tobytes(), ctx.sim.now_ns())
                dist.barrier()
                log[rank, i, "barrier"] = ctx.sim.now_ns()

        algorithms = {"all_reduce": [{"max_bytes": 64, "algorithm": "double_binary_tree"},
                                     {"algorithm": "halving_doubling"}],
                      "reduce": "binomial_tree", "broadcast": "ring"}
        run(worker, 4, ccl=ccl_for(model, **algorithms))
        return log

    for model in MODELS:
        first, second = program(model), program(model)
        assert first == second, model
        assert len(first) >= 4 * 3 * 3


# ---- 3. the ccl config --------------------------------------------------------------------------


def all_reduce_times(model, algorithms, p, sizes):
    """Virtual durations on fully_connected8 of a float32 all_reduce of each element count in
    ``sizes``; ``algorithms``: the all_reduce setting, or None for coopsim/configs/ccl.yaml's."""
    timed = [("all_reduce", "float32", n, None) for n in sizes]
    records = {}
    run(timed_worker, p, timed, records,
        ccl=ccl_for(model, **({} if algorithms is None else {"all_reduce": algorithms})))
    return [measured(records, k, p)[1] for k in range(len(sizes))]


@pytest.mark.parametrize("model", MODELS)
def test_size_thresholds_choose_the_first_matching_rule(model):
    """Rules [<= 1024 B: direct, <= 65536 B: binomial_tree, else ring] on 4 ranks: 1024 bytes
    (the bound is inclusive) runs direct, 1028 and 65536 bytes binomial_tree, 65552 bytes ring
    — observed through the time, which matches that algorithm's formula and no other."""
    rules = [{"max_bytes": 1024, "algorithm": "direct"},
             {"max_bytes": 65536, "algorithm": "binomial_tree"}, {"algorithm": "ring"}]
    sizes = {256: "direct", 257: "binomial_tree", 16384: "binomial_tree", 16388: "ring"}
    times = all_reduce_times(model, rules, 4, list(sizes))
    tolerance = 1e-9 if model == "analytic" else 1e-2  # the candidates differ by more than 1%
    for (n, chosen), got in zip(sizes.items(), times):
        for algorithm in ("direct", "binomial_tree", "ring"):
            want = 4000 + analytic_time_ns("all_reduce", algorithm, 4, 4 * n, 700, 1 / 50, 3 / 1000)
            matches = abs(got - want) <= tolerance * want
            assert matches == (algorithm == chosen), (n, algorithm, got, want)


def test_default_config_all_reduce_thresholds():
    """coopsim/configs/ccl.yaml on a topology without NCCL's protocols: all_reduce up to 65536 bytes
    by halving_doubling, larger by ring (the rules marked protocols: nccl are skipped)."""
    times = all_reduce_times("analytic", None, 8, [16384, 16392])
    for n, algorithm, got in zip((16384, 16392), ("halving_doubling", "ring"), times):
        want = 4000 + analytic_time_ns("all_reduce", algorithm, 8, 4 * n, 700, 1 / 50, 3 / 1000)
        assert got == pytest.approx(want, rel=1e-9), (n, algorithm)
    assert load_ccl().rules["all_reduce"] == [(67108864, "hierarchical"), (2097152, "ring"),
                                              (None, "nvls"), (65536, "halving_doubling"), (None, "ring")]
    assert load_ccl().nccl_only["all_reduce"] == [True, True, True, False, False]
    assert load_ccl().model == "transfer"


def test_a_hierarchical_rule_is_skipped_on_one_node():
    """[hierarchical, ring] on fully_connected8 (one node): ring."""
    n = 64
    got, = all_reduce_times("analytic", [{"algorithm": "hierarchical"}, {"algorithm": "ring"}], 4, [n])
    assert got == pytest.approx(4000 + analytic_time_ns("all_reduce", "ring", 4, 4 * n, 700, 1 / 50,
                                                        3 / 1000), rel=1e-9)


def test_hierarchical_falls_back_when_nodes_are_unequal():
    """A group with 2 ranks on node 0 and 1 on node 1 cannot run hierarchical: the next rule
    (ring) runs, with the right result."""
    results = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group()
        group = dist.new_group([0, 1, 8])
        if group is not dist.GroupMember.NON_GROUP_MEMBER:
            t = ctx.ones(30) * (rank + 1)
            ctx.cuda.synchronize()
            ctx.wait(ctx.sim.timer(SPACING_NS - ctx.sim.now_ns()))
            dist.all_reduce(t, group=group, async_op=True).wait()
            ctx.cuda.synchronize()  # nccl: wait() orders the stream; the host waits here
            results[rank] = (t.tolist(), ctx.sim.now_ns() - SPACING_NS)

    with coopsim.RuntimeContext("cluster_2x8", ccl=ccl_for(
            "analytic", all_reduce=[{"algorithm": "hierarchical"}, {"algorithm": "ring"}])) as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=16)
        alpha, beta, gamma = plan_parameters(ctx, [0, 1, 8])
    want = 4000 + analytic_time_ns("all_reduce", "ring", 3, 120, alpha, beta, gamma)
    assert sorted(results) == [0, 1, 8]
    for values_, took in results.values():
        assert values_ == [12.0] * 30
        assert took == pytest.approx(want, rel=1e-9)


def test_a_fixed_hierarchical_algorithm_on_one_node_names_the_problem():
    """``all_reduce: hierarchical`` (a fixed algorithm, no size rule) on a one-node topology.
    The run fails with "no rule matches a message of 400 bytes; end the list with a rule
    without max_bytes" — but the user wrote no list and no max_bytes; the message must say
    that hierarchical needs a group that spans several nodes (or the run should fall back)."""
    def worker(rank, ctx):
        ctx.distributed.init_process_group()
        t = ctx.ones(100)
        ctx.distributed.all_reduce(t)
        assert t[0].item() == 2.0

    try:
        run(worker, 2, ccl={"algorithms": {"all_reduce": "hierarchical"}})
    except CclConfigError as e:
        assert "hierarchical" in str(e) and "node" in str(e), str(e)


def test_a_rule_list_without_a_catch_all_is_refused_at_load():
    """A list whose every rule has max_bytes would leave large messages without an algorithm:
    refused when the context is made, naming the collective's key."""
    ccl = {"algorithms": {"all_reduce": [{"max_bytes": 64, "algorithm": "ring"}]}}
    with pytest.raises(CclConfigError, match=r"algorithms\.all_reduce: the last rule must have no max_bytes"):
        coopsim.RuntimeContext("fully_connected8", ccl=ccl)


@pytest.mark.parametrize("ccl, key", [
    ({"model": "fast"}, "model"),
    ({"modle": "analytic"}, "modle"),
    ({"algorithms": {"all_to_all": "ring"}}, r"algorithms\.all_to_all\[0\]\.algorithm"),
    ({"algorithms": {"gather": "halving_doubling"}}, r"algorithms\.gather\[0\]\.algorithm"),
    ({"algorithms": {"all_reduce": "fastest"}}, r"algorithms\.all_reduce\[0\]\.algorithm"),
    ({"algorithms": {"all_reduce": [{"max_bytes": -1, "algorithm": "ring"}]}},
     r"algorithms\.all_reduce\[0\]\.max_bytes"),
    ({"algorithms": {"reduce": [{"max_bytes": 8, "algorithm": "direct"},
                                {"max_bytes": 1.5, "algorithm": "direct"}]}},
     r"algorithms\.reduce\[1\]\.max_bytes"),
    ({"algorithms": {"all_reduce": [{"max_bytes": True, "algorithm": "ring"}]}},
     r"algorithms\.all_reduce\[0\]\.max_bytes"),
    ({"algorithms": {"all_reduce": [{"max_byte": 8, "algorithm": "ring"}]}},
     r"algorithms\.all_reduce\[0\]"),
    ({"algorithms": {"all_reduce": []}}, r"algorithms\.all_reduce"),
    ({"algorithms": {"allreduce": "ring"}}, r"algorithms\.allreduce"),
    ({"algorithms": "ring"}, "algorithms"),
    ({"algorithms": None}, "algorithms"),
    ({"algorithms": {"scatter": {"algorithm": "direct"}}}, r"algorithms\.scatter"),
    ("no_such_ccl.yaml", "no_such_ccl.yaml"),
])
def test_bad_ccl_values_raise_naming_the_key(ccl, key):
    with pytest.raises(CclConfigError, match=key):
        coopsim.RuntimeContext(IDEAL, ccl=ccl)


def test_bad_ccl_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "my_ccl.yaml"
    path.write_text("model: analytic\nalgorithms:\n  broadcast: halving_doubling\n")
    with pytest.raises(CclConfigError, match=r"my_ccl\.yaml.*algorithms\.broadcast\[0\]\.algorithm"):
        coopsim.RuntimeContext(IDEAL, ccl=str(path))
    path.write_text("model: analytic\nalgorithms:\n  broadcast: ring\n")
    ccl = load_ccl(str(path))
    assert ccl.model == "analytic" and ccl.rules["broadcast"] == [(None, "ring")]
    assert ccl.rules["reduce"] == load_ccl().rules["reduce"]  # the rest from coopsim/configs/ccl.yaml
    path.write_text("model: analytic\nalgorithms: ring\n")
    with pytest.raises(CclConfigError, match=r"my_ccl\.yaml.*algorithms"):
        load_ccl(str(path))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("async_op", [False, True])
def test_all_gather_into_tensors_of_different_sizes_under_nccl(model, async_op):
    # ProcessGroupNCCL::allgather, when the outputs differ in size: one broadcast per rank,
    # coalesced; entry i is rank i's input (here on a sub-group, ranks 1 and 3 of 4)
    seen = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        pair = dist.new_group([1, 3])
        if rank in (1, 3):
            me = dist.get_rank(pair)
            out = [ctx.zeros(2, 1), ctx.zeros(3, dtype=ctx.float32)]
            work = dist.all_gather(out, ctx.arange(2 + me, dtype=ctx.float32) + 10 * rank, group=pair,
                                   async_op=async_op)
            if work is not None:
                work.wait()
            seen[rank] = [t.tolist() for t in out]

    with coopsim.RuntimeContext(IDEAL, ccl={"model": model}) as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=4)
    assert seen == {r: [[[10.0], [11.0]], [30.0, 31.0, 32.0]] for r in (1, 3)}


def test_all_gather_into_tensors_of_different_sizes_under_gloo_raises_gloos_error():
    errors = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group("gloo")
        try:
            dist.all_gather([ctx.zeros(i + 1) for i in range(3)], ctx.ones(rank + 1))
        except RuntimeError as e:
            errors[rank] = str(e)
        dist.barrier()  # nothing of the refused call is left behind

    with coopsim.RuntimeContext(IDEAL) as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=3)
    assert errors[0] == "ProcessGroupGloo::allgather: invalid tensor size at index 1 (expected (1), got (2))"
    assert errors[2] == "ProcessGroupGloo::allgather: invalid tensor size at index 0 (expected (3), got (1))"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("backend", ["nccl", "gloo"])
def test_reduce_scatter_from_tensors_of_different_sizes(model, backend):
    # PyTorch runs it as one reduce per rank (ProcessGroupNCCL::reduce_scatter when the inputs
    # differ in size; gloo too): rank i gets the reduction of every rank's entry i
    seen = {}

    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group(backend)
        entries = [ctx.arange(i + 1, dtype=ctx.float32) * (rank + 1) for i in range(3)]
        out = ctx.zeros(rank + 1)
        dist.reduce_scatter(out, entries, op=dist.ReduceOp.AVG)
        ints = ctx.zeros(rank + 1, dtype=ctx.int64)
        dist.reduce_scatter(ints, [ctx.full((i + 1,), 2 * rank + 1, dtype=ctx.int64) for i in range(3)],
                            op=dist.ReduceOp.AVG)
        seen[rank] = (out.tolist(), ints.tolist(), entries[0].tolist())

    with coopsim.RuntimeContext(IDEAL, ccl={"model": model}) as ctx:
        ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=3)
    for r in range(3):
        # float AVG: (1 + 2 + 3) / 3 = 2 times the index; int AVG: (1 + 3 + 5) // 3
        assert seen[r] == ([2.0 * i for i in range(r + 1)], [3] * (r + 1), [0.0])


def test_c6_uneven_all_gather_whose_sizes_disagree_is_a_mismatch():
    def worker(rank, ctx):
        dist = ctx.distributed
        dist.init_process_group("nccl")
        sizes = [1, 2] if rank == 0 else [1, 3]  # rank 0 expects 2 elements from rank 1, which sends 3
        out = [ctx.zeros(n) for n in sizes]
        dist.all_gather(out, ctx.ones(sizes[rank]))
        out[0].tolist()

    with pytest.raises(coopsim.SpawnException) as info:
        with coopsim.RuntimeContext(IDEAL) as ctx:
            ctx.multiprocessing.spawn(worker, args=(ctx,), nprocs=2)
    error = info.value.errors[0]
    assert isinstance(error, coopsim.CollectiveMismatchError) and error.fields == ["splits"]
    assert "all_gather (uneven) #1 on group WORLD" in str(error)


@pytest.mark.parametrize("model", MODELS)
def test_all_to_all_of_tensors_of_different_sizes(model):
    # ProcessGroupNCCL::alltoall sends each input tensor with its own size; gloo refuses it
    # with its own message (checked on torch 2.13)
    seen, errors = {}, {}

    def worker(rank, ctx, backend):
        dist = ctx.distributed
        dist.init_process_group(backend)
        ins = [ctx.full((j + 1,), float(10 * rank + j)) for j in range(3)]  # rank j gets j + 1 from each
        outs = [ctx.zeros(rank + 1) for _ in range(3)]
        try:
            dist.all_to_all(outs, ins)
        except RuntimeError as e:
            errors[rank] = str(e)
            return
        seen[rank] = [t.tolist() for t in outs]

    for backend in ("nccl", "gloo"):
        with coopsim.RuntimeContext(IDEAL, ccl={"model": model}) as ctx:
            ctx.multiprocessing.spawn(worker, args=(ctx, backend), nprocs=3)
    assert seen == {j: [[float(10 * i + j)] * (j + 1) for i in range(3)] for j in range(3)}
    assert errors == {r: "ProcessGroupGloo::alltoall: invalid tensor size at index 1 (expected (1), got (2))"
                      for r in range(3)}
