"""Collective schedules (ADR-0008) and their closed-form costs (ADR-0009): pure, no runtime."""

import functools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coopsim.distributed.algorithms import (
    BUILDERS,
    IN_PLACE,
    ROOTED,
    Schedule,
    Step,
    Xfer,
    analytic_time_ns,
    build_schedule,
    chunks,
    exact_multiple,
    run_schedule,
    schedule_time_ns,
)
from coopsim.distributed.algorithms.trees import double_trees

P_VALUES = (1, 2, 3, 4, 5, 8)
PAIRS = sorted(BUILDERS)
REDUCING = [pair for pair in PAIRS if pair[0] in ("all_reduce", "reduce_scatter", "reduce")]
COPYING = [pair for pair in PAIRS if pair not in REDUCING]
FLOAT_OPS = {"sum": np.add, "prod": np.multiply, "min": np.minimum, "max": np.maximum}
INT_OPS = {**FLOAT_OPS, "band": np.bitwise_and, "bor": np.bitwise_or, "bxor": np.bitwise_xor}
DTYPES = (np.float32, np.float16, np.int32, np.int64)


def node_layouts(algorithm, p):
    """The ``nodes`` arguments to try: every equal split of p ranks into nodes, with the ranks
    of a node contiguous and strided."""
    if algorithm != "hierarchical":
        return [None]
    layouts = []
    for local in (d for d in range(1, p + 1) if p % d == 0):
        layouts.append([r // local for r in range(p)])
        layouts.append([r % (p // local) for r in range(p)])
    return layouts


def roots(collective, p):
    return sorted({0, p // 2, p - 1}) if collective in ROOTED else [None]


def sizes(collective, p):
    """Element counts: n per rank for in-place collectives (uneven and n < p included), else
    the per-rank chunk count."""
    return (1, 4 * p, 4 * p + 3) if collective in IN_PLACE else (1, 3)


def summation_depth(algorithm, p, nodes):
    """The most roundings an input passes through on its way to a reduced result (ADR-0008)."""
    if algorithm in ("ring", "direct"):
        return p - 1
    if algorithm == "halving_doubling":
        p2 = 1 << (p.bit_length() - 1)
        return p2.bit_length() - 1 + (p > p2)
    if algorithm == "binomial_tree":
        return (p - 1).bit_length()
    if algorithm == "double_binary_tree":
        return max(2 * (p - 1).bit_length() - 1, 0)
    local = nodes.count(nodes[0])
    return (local - 1) + (p // local - 1)


def random_inputs(rng, dtype, op_name, shape):
    if np.issubdtype(dtype, np.integer):
        if op_name == "prod":
            return rng.choice([-3, -2, -1, 1, 2, 3], size=shape).astype(dtype)
        high = 1000 if op_name == "sum" else 2**30
        return rng.integers(-high, high, size=shape).astype(dtype)
    if op_name == "prod":
        return rng.uniform(0.5, 1.5, size=shape).astype(dtype)
    return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)


def assert_reduced(result, stacked, op_name, depth, where):
    """``result`` equals the reduction of ``stacked`` (rows = ranks): exactly for integers and
    min/max, else within depth * eps * sum|x| (sum) or (p-1) * eps * |prod| (prod)."""
    op = INT_OPS[op_name]
    if np.issubdtype(stacked.dtype, np.integer) or op_name in ("min", "max"):
        expected = functools.reduce(op, stacked)
        assert result.dtype == stacked.dtype and np.array_equal(result, expected), where
        return
    exact = stacked.astype(np.float64)
    eps = float(np.finfo(stacked.dtype).eps)
    if op_name == "sum":
        expected = exact.sum(axis=0)
        tolerance = depth * eps * np.abs(exact).sum(axis=0)
    else:
        expected = exact.prod(axis=0)
        tolerance = (len(stacked) - 1) * eps * np.abs(expected)
    error = np.abs(result.astype(np.float64) - expected)
    assert np.all(error <= tolerance), (where, error.max(), tolerance.max())


def run(collective, algorithm, p, size, root, nodes, inputs, op):
    """Build and run a schedule; ``inputs[r]`` is rank r's "in" (for in-place collectives its
    "out" too). Returns the out buffers."""
    schedule = build_schedule(collective, algorithm, p, size, root=root, nodes=nodes)
    if collective in IN_PLACE:
        outs = [x.copy() for x in inputs]
        run_schedule(schedule, outs, outs, op)
        return outs
    ins = [x.copy() for x in inputs]
    outs = [np.zeros(schedule.out_count, dtype=x.dtype) for x in inputs]
    if collective == "gather":
        outs = [o if r == root else o[:0] for r, o in enumerate(outs)]
    run_schedule(schedule, ins, outs, op)
    for before, after in zip(inputs, ins):
        assert np.array_equal(before, after), "a schedule wrote its input"
    return outs


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("collective, algorithm", REDUCING)
def test_reductions_match_numpy(collective, algorithm, p):
    rng = np.random.default_rng(1000 * p + PAIRS.index((collective, algorithm)))
    for nodes in node_layouts(algorithm, p):
        for root in roots(collective, p):
            for size in sizes(collective, p):
                for dtype in DTYPES:
                    is_int = np.issubdtype(dtype, np.integer)
                    for op_name, op in (INT_OPS if is_int else FLOAT_OPS).items():
                        length = size if collective in IN_PLACE else p * size
                        stacked = random_inputs(rng, dtype, op_name, (p, length))
                        outs = run(collective, algorithm, p, size, root, nodes, list(stacked), op)
                        where = (collective, algorithm, p, size, root, nodes, dtype, op_name)
                        depth = summation_depth(algorithm, p, nodes)
                        if collective == "reduce":
                            assert_reduced(outs[root], stacked, op_name, depth, where)
                        elif collective == "reduce_scatter":
                            for r in range(p):
                                part = stacked[:, r * size:(r + 1) * size]
                                assert_reduced(outs[r], part, op_name, depth, where)
                        else:
                            assert_reduced(outs[0], stacked, op_name, depth, where)
                            for out in outs[1:]:  # replicated: the same bits everywhere
                                assert out.tobytes() == outs[0].tobytes(), where


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("collective, algorithm", COPYING)
def test_data_movement_matches_numpy(collective, algorithm, p):
    rng = np.random.default_rng(2000 * p + PAIRS.index((collective, algorithm)))
    for root in roots(collective, p):
        for size in sizes(collective, p):
            for dtype in DTYPES:
                length = size if collective in IN_PLACE else p * size if collective in (
                    "all_to_all", "scatter") else size
                stacked = random_inputs(rng, dtype, "sum", (p, length))
                outs = run(collective, algorithm, p, size, root, None, list(stacked), np.add)
                where = (collective, algorithm, p, size, root, dtype)
                if collective == "broadcast":
                    expected = {r: stacked[root] for r in range(p)}
                elif collective == "all_gather":
                    expected = {r: stacked.reshape(-1) for r in range(p)}
                elif collective == "gather":
                    expected = {root: stacked.reshape(-1)}
                elif collective == "scatter":
                    expected = {r: stacked[root, r * size:(r + 1) * size] for r in range(p)}
                else:  # all_to_all: chunk j of rank i's input is chunk i of rank j's output
                    blocks = stacked.reshape(p, p, size)
                    expected = {j: blocks[:, j, :].reshape(-1) for j in range(p)}
                for r, want in expected.items():
                    assert outs[r].tobytes() == want.tobytes(), (where, r)


def test_c9_schedules_are_deterministic():
    for collective, algorithm in PAIRS:
        for p in P_VALUES + (16,):
            for nodes in node_layouts(algorithm, p):
                for root in roots(collective, p):
                    args = (collective, algorithm, p, 3 * p + 1)
                    first = build_schedule(*args, root=root, nodes=nodes)
                    again = build_schedule(*args, root=root, nodes=nodes)
                    assert first == again and hash(first) == hash(again)


# ---- timing: the closed forms against the ideal step-synchronous execution -----------------

TIMING_P = (1, 2, 3, 4, 5, 8, 16)
MACHINES = [(1000.0, 0.01, 0.002), (1.0, 1.0, 1.0), (0.0, 1.0, 0.0), (7.0, 0.0, 3.0),
            (350.0, 0.05, 0.3)]
ITEMSIZE = 4


def timing_cases():
    for collective, algorithm in PAIRS:
        for p in TIMING_P:
            for nodes in node_layouts(algorithm, p):
                for root in roots(collective, p):
                    yield collective, algorithm, p, root, nodes


def nbytes_of(collective, p, size):
    return (size if collective in IN_PLACE else p * size) * ITEMSIZE


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("collective, algorithm", PAIRS)
def test_closed_form_equals_ideal_schedule_time(collective, algorithm):
    for _, _, p, root, nodes in (c for c in timing_cases() if c[:2] == (collective, algorithm)):
        unit = exact_multiple(collective, algorithm, p, nodes)
        for size in (unit, 3 * unit, 64 * unit, 1000 * unit):
            schedule = build_schedule(collective, algorithm, p, size, root=root, nodes=nodes)
            for alpha, beta, gamma in MACHINES:
                simulated = schedule_time_ns(schedule, ITEMSIZE, alpha, beta, gamma)
                formula = analytic_time_ns(collective, algorithm, p,
                                           nbytes_of(collective, p, size), alpha, beta, gamma,
                                           nodes=nodes)
                assert close(simulated, formula), (p, size, root, nodes, alpha, beta, gamma,
                                                   simulated, formula)


@pytest.mark.parametrize("collective, algorithm", [pair for pair in PAIRS if pair[0] in IN_PLACE])
def test_uneven_sizes_lie_between_the_closed_forms_around_them(collective, algorithm):
    for _, _, p, root, nodes in (c for c in timing_cases() if c[:2] == (collective, algorithm)):
        unit = exact_multiple(collective, algorithm, p, nodes)
        for n in (1, unit + 1, 5 * unit - 1, 77 * unit + unit // 2 + 1):
            schedule = build_schedule(collective, algorithm, p, n, root=root, nodes=nodes)
            below, above = (n // unit) * unit, -(-n // unit) * unit
            for alpha, beta, gamma in MACHINES:
                simulated = schedule_time_ns(schedule, ITEMSIZE, alpha, beta, gamma)
                low, high = (analytic_time_ns(collective, algorithm, p, m * ITEMSIZE, alpha,
                                              beta, gamma, nodes=nodes) for m in (below, above))
                assert low <= simulated * (1 + 1e-9) + 1e-9, (p, n, low, simulated)
                assert simulated <= high * (1 + 1e-9) + 1e-9, (p, n, simulated, high)


def test_published_formulas_for_powers_of_two():
    """Thakur, Rabenseifner & Gropp 2005, for p a power of two and n divisible by p."""
    a, b, g, n = 1000.0, 0.01, 0.002, 1 << 20
    for p in (2, 4, 8, 16):
        lg = p.bit_length() - 1
        frac = (p - 1) / p
        assert close(analytic_time_ns("all_reduce", "ring", p, n, a, b, g),
                     2 * (p - 1) * a + 2 * frac * n * b + frac * n * g)
        assert close(analytic_time_ns("all_reduce", "halving_doubling", p, n, a, b, g),
                     2 * lg * a + 2 * frac * n * b + frac * n * g)
        assert close(analytic_time_ns("broadcast", "binomial_tree", p, n, a, b, g),
                     lg * (a + n * b))
        assert close(analytic_time_ns("all_gather", "halving_doubling", p, n, a, b, g),
                     lg * a + frac * n * b)
        assert close(analytic_time_ns("reduce_scatter", "halving_doubling", p, n, a, b, g),
                     lg * a + frac * n * (b + g))
        assert close(analytic_time_ns("all_gather", "ring", p, n, a, b, g),
                     (p - 1) * a + frac * n * b)
    for collective, algorithm in PAIRS:
        nodes = [0] if algorithm == "hierarchical" else None
        assert analytic_time_ns(collective, algorithm, 1, n, a, b, g, nodes=nodes) == 0.0


# ---- structure and errors --------------------------------------------------------------------

def test_double_binary_trees_are_complementary():
    for p in range(2, 70):
        edges_a, edges_b, height = double_trees(p)
        assert height == (p - 1).bit_length()
        interior = []
        for edges in (edges_a, edges_b):
            children = sorted(child for _, child, _ in edges)
            assert children == list(range(1, p)), p  # spans every rank once, rooted at 0
            assert max(sum(parent == v for parent, _, _ in edges) for v in range(p)) <= 2
            interior.append({parent for parent, _, _ in edges} - {0})
        if p > 2:
            assert not interior[0] & interior[1], p


def test_every_schedule_is_valid_for_many_ranks():
    for collective, algorithm in PAIRS:
        for p in range(1, 34):
            nodes = [r % 1 for r in range(p)] if algorithm == "hierarchical" else None
            root = p - 1 if collective in ROOTED else None
            build_schedule(collective, algorithm, p, 2 * p + 1, root=root, nodes=nodes)


def test_schedule_rejects_two_transfers_on_one_pair_and_writes_to_in():
    two = Step((Xfer(0, 1, "out", 0, "out", 0, 1, False), Xfer(0, 1, "out", 1, "out", 1, 1, False)))
    with pytest.raises(ValueError, match="two transfers between one pair"):
        Schedule("all_reduce", "mine", 2, (two,), 2, 2, None)
    into_in = Step((Xfer(0, 1, "out", 0, "in", 0, 1, False),))
    with pytest.raises(ValueError, match="bad buffer"):
        Schedule("all_reduce", "mine", 2, (into_in,), 2, 2, None)
    outside = Step((Xfer(0, 1, "out", 1, "out", 0, 2, False),))
    with pytest.raises(ValueError, match="outside its buffer"):
        Schedule("all_reduce", "mine", 2, (outside,), 2, 2, None)


def test_unknown_algorithm_names_the_available_ones():
    message = ("unknown algorithm 'butterfly' for all_reduce; available for all_reduce: "
               "binomial_tree, direct, double_binary_tree, halving_doubling, hierarchical, nvls, ring")
    with pytest.raises(ValueError, match=message):
        build_schedule("all_reduce", "butterfly", 4, 16)
    with pytest.raises(ValueError, match=message):
        analytic_time_ns("all_reduce", "butterfly", 4, 64, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="unknown collective 'allreduce'; collectives: all_reduce"):
        build_schedule("allreduce", "ring", 4, 16)


def test_unsupported_collective_names_what_the_algorithm_implements():
    with pytest.raises(ValueError, match=r"algorithm 'ring' does not implement gather \(it "
                       r"implements all_gather, all_reduce, broadcast, reduce_scatter\); "
                       r"available for gather: binomial_tree, direct"):
        build_schedule("gather", "ring", 4, 2, root=0)
    with pytest.raises(ValueError, match="'hierarchical' does not implement reduce_scatter"):
        analytic_time_ns("reduce_scatter", "hierarchical", 4, 64, 1.0, 1.0, 1.0)


def test_hierarchical_needs_equal_nodes():
    with pytest.raises(ValueError, match=r"same number of ranks on every node; ranks per node: "
                       r"\{0: 2, 1: 1\}"):
        build_schedule("all_reduce", "hierarchical", 3, 12, nodes=[0, 0, 1])
    with pytest.raises(ValueError, match="same number of ranks on every node"):
        analytic_time_ns("all_reduce", "hierarchical", 3, 48, 1.0, 1.0, 1.0, nodes=[0, 1, 1])
    with pytest.raises(ValueError, match="needs nodes= with one node id per rank"):
        build_schedule("all_reduce", "hierarchical", 4, 12)


def test_roots_are_checked():
    with pytest.raises(ValueError, match=r"broadcast needs a root in 0\.\.3, got None"):
        build_schedule("broadcast", "ring", 4, 8)
    with pytest.raises(ValueError, match=r"gather needs a root in 0\.\.3, got 4"):
        build_schedule("gather", "direct", 4, 8, root=4)
    with pytest.raises(ValueError, match="all_reduce takes no root"):
        build_schedule("all_reduce", "ring", 4, 8, root=0)


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=1, max_value=1000))
def test_chunks_partition_evenly(n, p):
    parts = chunks(n, p)
    assert len(parts) == p
    assert [off for off, _ in parts] == [sum(c for _, c in parts[:i]) for i in range(p)]
    assert sum(c for _, c in parts) == n
    assert [c for _, c in parts] == [n // p + 1] * (n % p) + [n // p] * (p - n % p)
