"""The one implementation behind ``python -m benches.allreduce`` and its siblings (all_gather,
reduce_scatter, broadcast, reduce, alltoall, sendrecv): nccl-tests' ``*_perf`` table for a
simulated machine. The output contract (columns, units, what a time is, how ``#wrong`` is
computed, the defaults and where they differ from nccl-tests) is docs/adr/0010.

For each algorithm section, each size and each placement (out-of-place, then in-place), every
rank runs, in one spawn on a fresh context:

1. create its buffers (inputs: small integers, so that every expected value is exact);
2. ``-w`` untimed iterations; every rank synchronizes its stream, then a host barrier;
3. ``-n`` timed iterations: the time is the virtual time from the barrier that releases them
   (every stream idle) to the barrier after every rank's stream has finished them, / ``-n``;
4. ``-c`` checks: fresh inputs, one collective, every element of every rank's output compared
   with the expected values.

The host barrier costs no virtual time (nccl-tests' thread barrier). Everything here is host
code, which costs no virtual time either: only the simulated devices and links do.
"""

from __future__ import annotations

import argparse
import csv
import gc
import importlib.util
import json
import re
import sys
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

import coopsim
from coopsim.distributed.algorithms import algorithms_for
from coopsim.distributed.api import out_of_place
from coopsim.distributed.ccl import MODELS, load_ccl
from coopsim.engine.trace import write_chrome_trace
from coopsim.tensor.ops import round_bfloat16
from coopsim.topology import TopologyError, bundled_topologies, load_topology

DEFAULT_TOPOLOGY = "dgx_h100"
DEFAULT_MINBYTES = 8
DEFAULT_MAXBYTES = 128 * 1024 * 1024
DEFAULT_ITERS = 5  # nccl-tests: 20 (virtual time has no noise; see ADR-0010)
DEFAULT_WARMUP = 1  # nccl-tests: 5
DEFAULT_STEPBYTES = 1024 * 1024  # with -f 1, as nccl-tests
NCCL_TESTS_ITERS, NCCL_TESTS_WARMUP = 20, 5
SUFFIXES = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}

# nccl-tests type names -> coopsim dtype names; torch spellings accepted as aliases
DATATYPES = {"float": "float32", "half": "float16", "bfloat16": "bfloat16", "int32": "int32",
             "int64": "int64"}
TYPE_ALIASES = {"float32": "float", "float16": "half", "bf16": "bfloat16", "int": "int32"}
OPS = {"sum": "SUM", "prod": "PRODUCT", "min": "MIN", "max": "MAX", "avg": "AVG"}
BUSBW = {"2(n-1)/n": lambda n: 2 * (n - 1) / n, "(n-1)/n": lambda n: (n - 1) / n,
         "1": lambda n: 1.0}


@dataclass(frozen=True)
class Collective:
    """What differs between the benches: everything else is shared."""

    name: str  # all_reduce, ...
    module: str  # the python -m name
    ccl: str  # its key in configs/ccl.yaml (which algorithm runs it)
    busbw: str  # nccl-tests' bus-bandwidth factor, a key of BUSBW
    split: bool  # size is nranks x count elements (per rank: all_gather's output,
    #              reduce_scatter's and alltoall's input)
    reduces: bool  # takes -o
    rooted: bool  # takes -r
    notes: tuple = ()


COLLECTIVES = {c.name: c for c in (
    Collective("all_reduce", "allreduce", "all_reduce", "2(n-1)/n", False, True, False),
    Collective("all_gather", "all_gather", "all_gather", "(n-1)/n", True, False, False),
    Collective("reduce_scatter", "reduce_scatter", "reduce_scatter", "(n-1)/n", True, True, False),
    Collective("broadcast", "broadcast", "broadcast", "1", False, False, True),
    Collective("reduce", "reduce", "reduce", "1", False, True, True, notes=(
        "#wrong checks the root's output only (the result); the other ranks' buffers are not "
        "checked",)),
    Collective("alltoall", "alltoall", "all_to_all", "(n-1)/n", True, False, False, notes=(
        "in-place alltoall is not checked (#wrong N/A), as in nccl-tests",)),
    Collective("sendrecv", "sendrecv", "all_to_all", "1", False, False, False, notes=(
        "each rank sends to rank+1 and receives from rank-1 at once, as one grouped op: "
        "all_to_all_single with one non-empty split (coopsim runs batch_isend_irecv's ops "
        "one after another on the stream)",
        "in-place sendrecv is not checked (#wrong N/A), as in nccl-tests")),
)}

PLACEMENTS = (("out_of_place", False), ("in_place", True))
RESULT_FIELDS = ("time_us", "algbw_GBps", "busbw_GBps", "wrong")
COLUMNS = ("algorithm", "size_B", "count", "type", "redop", "root") + tuple(
    f"{place}_{field}" for place, _ in PLACEMENTS for field in RESULT_FIELDS)


# -- arguments ---------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block) and exits 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_size(text: str) -> int:
    """Bytes: an integer with an optional K, M or G suffix (powers of 1024, as nccl-tests)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGkmg]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: expected bytes as a number with an optional K, M or G "
            f"suffix (powers of 1024), e.g. 8, 1K, 128M")
    try:
        value = Decimal(match.group(1)) * SUFFIXES[match.group(2).upper()]
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise argparse.ArgumentTypeError(f"invalid size {text!r}") from None
    if value != value.to_integral_value() or value < 1:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: expected a whole number of "
                                         f"bytes >= 1")
    return int(value)


def _int_at_least(lowest: int):
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            value = None
        if value is None or value < lowest:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer >= {lowest}")
        return value
    return parse


def _datatype(text: str) -> str:
    name = TYPE_ALIASES.get(text, text)
    if name not in DATATYPES:
        raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from "
                                         f"{', '.join(DATATYPES)})")
    return name


def make_parser(collective: Collective) -> _Parser:
    parser = _Parser(
        prog=f"python -m benches.{collective.module}",
        description=f"nccl-tests' {collective.name}_perf on a simulated machine: sizes, virtual "
                    f"times, algorithm and bus bandwidth, and a check of every result "
                    f"(docs/adr/0010-bench-output-contract.md).")
    add = parser.add_argument
    add("-b", "--minbytes", type=parse_size, default=None,
        help=f"smallest size (default {DEFAULT_MINBYTES}, rounded up to a multiple the "
             f"collective accepts); K/M/G suffixes are powers of 1024")
    add("-e", "--maxbytes", type=parse_size, default=DEFAULT_MAXBYTES,
        help="largest size (default 128M)")
    add("-i", "--stepbytes", type=parse_size, default=None,
        help="add this many bytes per step instead of multiplying (default with -f 1: 1M)")
    add("-f", "--stepfactor", type=_int_at_least(1), default=None,
        help="multiply the size by this per step (default 2; 1 means add -i bytes)")
    add("-o", "--op", choices=tuple(OPS), default="sum", help="reduction (default sum)")
    add("-d", "--datatype", type=_datatype, default="float",
        help=f"element type: {', '.join(DATATYPES)} (default float)")
    add("-r", "--root", type=_int_at_least(0), default=0,
        help="root rank of broadcast and reduce (default 0)")
    add("-n", "--iters", type=_int_at_least(1), default=DEFAULT_ITERS,
        help=f"timed iterations per size (default {DEFAULT_ITERS}; nccl-tests: {NCCL_TESTS_ITERS})")
    add("-w", "--warmup_iters", type=_int_at_least(0), default=DEFAULT_WARMUP,
        help=f"untimed iterations before each size's timed ones (default {DEFAULT_WARMUP})")
    add("-c", "--check", type=_int_at_least(0), default=1,
        help="check iterations per size (default 1; 0: no check, #wrong is N/A)")
    add("-z", "--blocking", type=int, choices=(0, 1), default=0,
        help="1: every rank waits for each collective, then a host barrier (default 0)")
    add("--topology", default=DEFAULT_TOPOLOGY,
        help=f"a bundled topology ({', '.join(bundled_topologies())}) or a YAML file "
             f"(default {DEFAULT_TOPOLOGY})")
    add("--nranks", type=_int_at_least(1), default=None,
        help="ranks, on devices 0..nranks-1 (default: every device of the topology)")
    add("--algo", default=None,
        help=f"algorithm(s), comma-separated: one table section each (for {collective.name}: "
             f"{', '.join(algorithms_for(collective.ccl))}; default: the rules of configs/ccl.yaml)")
    add("--model", choices=MODELS, default=None,
        help="collective timing model (default: configs/ccl.yaml's, transfer)")
    add("--json", metavar="FILE", help="also write the rows as JSON")
    add("--csv", metavar="FILE", help="also write the rows as CSV")
    add("--trace", metavar="FILE",
        help="write a Chrome trace (Perfetto, chrome://tracing) of the timed iterations")
    add("--plot", metavar="FILE.png", help="draw busbw against size (needs matplotlib)")
    add("--inject-error", action="store_true", help=argparse.SUPPRESS)
    return parser


@dataclass
class Config:
    """The validated arguments of one run."""

    collective: Collective
    topology: object
    nranks: int
    sizes: list
    algos: list  # None: configs/ccl.yaml's rules
    model: str
    dtype: str  # nccl-tests name
    op: str
    root: int
    iters: int
    warmup: int
    check: int
    blocking: int
    minbytes: int
    maxbytes: int
    step: str  # "2(factor)" or "1048576(bytes)", as nccl-tests' header
    inject_error: bool
    args: argparse.Namespace

    @property
    def dt(self):
        return getattr(coopsim.RuntimeContext, DATATYPES[self.dtype])

    @property
    def itemsize(self) -> int:
        return self.dt.itemsize

    def unit(self) -> int:
        """Sizes must be multiples of this many bytes."""
        return self.itemsize * (self.nranks if self.collective.split else 1)

    def count(self, size: int) -> int:
        """nccl-tests' count column: the count argument of the NCCL call."""
        return size // self.unit()

    def input_elements(self, size: int) -> int:
        """Elements of one rank's input buffer."""
        c = self.count(size)
        return c * self.nranks if self.collective.name in ("reduce_scatter", "alltoall") else c


def parse_args(argv, collective: Collective) -> Config:
    parser = make_parser(collective)
    args = parser.parse_args(argv)
    error = parser.error
    try:
        topology = load_topology(args.topology)
    except TopologyError as e:
        error(f"argument --topology: {e}")
    devices = topology.num_devices
    nranks = devices if args.nranks is None else args.nranks
    if nranks > devices:
        error(f"argument --nranks: {nranks} is more than the {devices} devices of topology "
              f"{topology.name} (accepted: 1..{devices})")
    if collective.rooted and args.root >= nranks:
        error(f"argument -r/--root: {args.root} is not a rank (accepted: 0..{nranks - 1})")
    algos = _algos(args.algo, collective, topology, nranks, error)
    cfg = Config(collective, topology, nranks, [], algos,
                 args.model or load_ccl().model, args.datatype, args.op, args.root, args.iters,
                 args.warmup_iters, args.check, args.blocking, 0, args.maxbytes, "", args.inject_error,
                 args)
    _sizes(cfg, args, error)
    _memory(cfg, error)
    for flag in ("json", "csv", "trace", "plot"):
        path = getattr(args, flag)
        if path is not None and not Path(path).resolve().parent.is_dir():
            error(f"argument --{flag}: directory {str(Path(path).parent)!r} does not exist")
    if args.plot is not None:
        if Path(args.plot).suffix.lower() not in (".png", ".svg", ".pdf"):
            error(f"argument --plot: {args.plot!r}: expected a .png, .svg or .pdf file name")
        if importlib.util.find_spec("matplotlib") is None:
            error("argument --plot: matplotlib is not installed; pip install 'coopsim[plot]'")
    return cfg


def _algos(text, collective, topology, nranks, error):
    if text is None:
        return [None]
    accepted = algorithms_for(collective.ccl)
    algos = []
    for name in text.split(","):
        name = name.strip()
        if name not in accepted:
            error(f"argument --algo: unknown algorithm {name!r} for {collective.name} "
                  f"(accepted: {', '.join(accepted)})")
        if name in algos:
            error(f"argument --algo: {name!r} given twice")
        algos.append(name)
    if "hierarchical" in algos:
        nodes = [topology.devices[r].node for r in range(nranks)]
        per_node = {n: nodes.count(n) for n in nodes}
        if len(per_node) < 2 or len(set(per_node.values())) > 1:
            error(f"argument --algo: hierarchical needs the ranks spread evenly over several "
                  f"nodes; on topology {topology.name} ranks 0..{nranks - 1} sit on nodes "
                  f"{sorted(per_node)} with {sorted(per_node.values())} ranks")
    return algos


def _sizes(cfg: Config, args, error) -> None:
    unit = cfg.unit()
    why = (f"{cfg.collective.name} on {cfg.nranks} ranks of {cfg.dtype} needs sizes divisible "
           f"by {'nranks x ' if cfg.collective.split else ''}{cfg.itemsize} B")
    if args.minbytes is None:
        minbytes = -(-DEFAULT_MINBYTES // unit) * unit
    else:
        minbytes = args.minbytes
        if minbytes % unit:
            error(f"argument -b/--minbytes: {minbytes} is not a multiple of {unit} ({why}); "
                  f"accepted: multiples of {unit}, e.g. {-(-minbytes // unit) * unit}")
    if args.maxbytes < minbytes:
        error(f"argument -e/--maxbytes: {args.maxbytes} is smaller than -b/--minbytes {minbytes}"
              f"{'' if args.minbytes is not None else ' (the default, rounded up: ' + why + ')'}")
    if args.stepbytes is not None and args.stepfactor not in (None, 1):
        error("argument -i/--stepbytes: not allowed with -f/--stepfactor > 1 (use -f 1 -i BYTES "
              "for sizes that grow by BYTES, or -f FACTOR alone)")
    if args.stepbytes is not None or args.stepfactor == 1:
        step = DEFAULT_STEPBYTES if args.stepbytes is None else args.stepbytes
        if step % unit:
            error(f"argument -i/--stepbytes: {step} is not a multiple of {unit} ({why})")
        cfg.step = f"{step}(bytes)"
        grow = lambda s: s + step  # noqa: E731
    else:
        factor = args.stepfactor or 2
        cfg.step = f"{factor}(factor)"
        grow = lambda s: s * factor  # noqa: E731
    sizes, size = [], minbytes
    while size <= args.maxbytes:
        sizes.append(size)
        size = grow(size)
    cfg.sizes, cfg.minbytes = sizes, minbytes


def _memory(cfg: Config, error) -> None:
    """Refuse sizes whose buffers (input, output, a scratch copy) overflow a device: no buffer
    of a rank is larger than the size."""
    need = 3 * cfg.sizes[-1]
    memory = min(cfg.topology.devices[r].kind.memory_bytes for r in range(cfg.nranks))
    if need > memory:
        error(f"argument -e/--maxbytes: {cfg.maxbytes} needs about {need} bytes per device, more "
              f"than the {memory} of topology {cfg.topology.name}'s devices")


# -- data: inputs whose results are exact, and the expected outputs ------------------------------

_EXACT_INTEGERS = {"float32": 2 ** 24, "float16": 2 ** 11, "bfloat16": 2 ** 8,
                   "int32": 2 ** 31, "int64": 2 ** 63}


class Data:
    """Every rank's input pattern (small integers, int8) and the expected outputs.

    Values are chosen so that every partial result of the reduction, in any order, is an
    integer the dtype holds exactly: sum and avg draw from 0..m with n x m within the
    dtype's exact integers (ranks beyond that limit contribute 0); prod multiplies at most
    ten 2s and any number of -1s; min, max and the non-reducing collectives draw from
    -100..100. The expected values are computed in int64 from the patterns, then converted
    (avg: divided in float64 and rounded once to the dtype, as the simulation's one division).
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        n, dtype = cfg.nranks, DATATYPES[cfg.dtype]
        length = cfg.input_elements(cfg.sizes[-1])
        op = cfg.op if cfg.collective.reduces else None
        limit = _EXACT_INTEGERS[dtype]
        self.patterns = []
        for rank in range(n):
            rng = np.random.default_rng([2024, rank])
            if op in ("sum", "avg"):
                active = min(n, limit)
                high = min(9, limit // active)
                p = rng.integers(0, high + 1, length, dtype=np.int8)
                if rank >= active:
                    p[:] = 0
            elif op == "prod":
                draw = rng.integers(0, 8, length, dtype=np.int8)
                p = np.where(draw == 0, np.int8(-1), np.int8(1))
                if rank < 10:
                    p[draw == 1] = 2
            else:
                p = rng.integers(-100, 101, length, dtype=np.int8)
            self.patterns.append(p)
        self._expected: dict = {}

    def input(self, ctx, rank: int, n: int):
        """A tensor holding rank ``rank``'s first ``n`` input elements."""
        return ctx.tensor(self.patterns[rank][:n], dtype=self.cfg.dt)

    def input_in_output(self, ctx, rank: int, c: int):
        """In-place all_gather: an output of nranks x ``c`` zeros holding rank ``rank``'s ``c``
        input elements in its own chunk."""
        values = np.zeros(c * self.cfg.nranks, dtype=np.int8)
        values[rank * c:(rank + 1) * c] = self.patterns[rank][:c]
        return ctx.tensor(values, dtype=self.cfg.dt)

    def expected(self, size: int, rank: int):
        """What ``rank``'s output must hold after one collective of ``size``, or None if it is
        not checked. Cached per size (the cache holds one size at a time)."""
        key = (size, rank if self._per_rank() else None)
        if key not in self._expected:
            if self._expected and next(iter(self._expected))[0] != size:
                self._expected.clear()
            self._expected[key] = self._compute(size, rank)
        return self._expected[key]

    def _per_rank(self) -> bool:
        return self.cfg.collective.name in ("reduce_scatter", "alltoall", "sendrecv", "reduce")

    def _compute(self, size: int, rank: int):
        cfg, p, name = self.cfg, self.cfg.nranks, self.cfg.collective.name
        c = cfg.count(size)
        pat = self.patterns
        if name in ("all_reduce", "reduce"):
            if name == "reduce" and rank != cfg.root:
                return None
            return self._reduced([x[:c] for x in pat])
        if name == "reduce_scatter":
            return self._reduced([x[rank * c:(rank + 1) * c] for x in pat])
        if name == "broadcast":
            values = pat[cfg.root][:c]
        elif name == "all_gather":
            values = np.concatenate([x[:c] for x in pat])
        elif name == "alltoall":
            values = np.concatenate([x[rank * c:(rank + 1) * c] for x in pat])
        else:  # sendrecv
            values = pat[(rank - 1) % p][:c]
        return self._as_dtype(values.astype(np.int64))

    def _reduced(self, parts) -> np.ndarray:
        op = self.cfg.op
        acc = parts[0].astype(np.int64)
        for x in parts[1:]:
            if op in ("sum", "avg"):
                acc += x
            elif op == "prod":
                acc *= x
            elif op == "min":
                np.minimum(acc, x, out=acc)
            else:
                np.maximum(acc, x, out=acc)
        if op == "avg":
            if self.cfg.dt.is_floating_point:
                return self._as_dtype(acc / len(parts))
            return self._as_dtype(acc // len(parts))
        return self._as_dtype(acc)

    def _as_dtype(self, values) -> np.ndarray:
        out = values.astype(self.cfg.dt._np)
        if self.cfg.dtype == "bfloat16":
            round_bfloat16(out)
        return out


# -- one size, run by every rank -------------------------------------------------------------------

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
            return send, ctx.zeros(n_out, dtype=cfg.dt)
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
        send.copy_(self.data.input(ctx, rank, cfg.input_elements(self.size)))
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


def make_row(cfg: Config, size: int, label: str, results: dict) -> dict:
    """A table row from ``results``: placement -> (time in us, wrong or None)."""
    c = cfg.collective
    row = {"algorithm": label, "size_B": size, "count": cfg.count(size), "type": cfg.dtype,
           "redop": cfg.op if c.reduces else "none", "root": cfg.root if c.rooted else -1}
    factor = BUSBW[c.busbw](cfg.nranks)
    for place, _ in PLACEMENTS:
        time_us, wrong = results[place]
        algbw = size / (time_us * 1e3) if time_us > 0 else float("inf")  # B/ns = GB/s
        row.update({f"{place}_time_us": time_us, f"{place}_algbw_GBps": algbw,
                    f"{place}_busbw_GBps": algbw * factor, f"{place}_wrong": wrong})
    return row


# -- output ----------------------------------------------------------------------------------------

def _time_str(us: float) -> str:
    """nccl-tests' time column: 2 decimals below 100 us, 1 below 10 ms, none above."""
    if us >= 10000.0:
        return f"{us:7.0f}"
    if us >= 100.0:
        return f"{us:7.1f}"
    return f"{us:7.2f}"


def format_row(row: dict) -> str:
    line = (f"{row['size_B']:12d}  {row['count']:12d}  {row['type']:>8s}  {row['redop']:>6s}  "
            f"{row['root']:6d}")
    for place, _ in PLACEMENTS:
        wrong = row[f"{place}_wrong"]
        line += (f"  {_time_str(row[f'{place}_time_us'])}  {row[f'{place}_algbw_GBps']:6.2f}  "
                 f"{row[f'{place}_busbw_GBps']:6.2f}  {'N/A' if wrong is None else wrong:>5}")
    return line


def column_header() -> list[str]:
    return [
        "# %10s  %12s  %8s  %6s  %6s           out-of-place                       in-place          "
        % ("", "", "", "", ""),
        "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s %6s  %7s  %6s  %6s %6s"
        % ("size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong",
           "time", "algbw", "busbw", "#wrong"),
        "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %5s  %7s  %6s  %6s  %5s"
        % ("(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)",
           "(GB/s)", ""),
    ]


def header(cfg: Config) -> list[str]:
    c, topo = cfg.collective, cfg.topology
    n = cfg.nranks
    lines = [
        f"# coopsim {c.name}_perf (python -m benches.{c.module}): nccl-tests' table for a "
        f"simulated machine; times are virtual",
        f"# minBytes {cfg.minbytes} maxBytes {cfg.maxbytes} step: {cfg.step} warmup iters: "
        f"{cfg.warmup} iters: {cfg.iters} validation: {cfg.check} blocking: {cfg.blocking}",
        f"# topology: {topo.name} ({topo.description or topo.source}); ranks: {n}; "
        f"model: {cfg.model}; type: {cfg.dtype}"
        + (f"; op: {cfg.op}" if c.reduces else "") + (f"; root: {cfg.root}" if c.rooted else ""),
        "# time: virtual us per iteration: from the instant every rank starts the timed "
        "iterations to the instant the last rank's stream has finished them, / iters",
        f"# algbw = size / time (GB/s, 1 GB = 1e9 B); busbw = algbw x {c.busbw} = "
        f"{BUSBW[c.busbw](n):g} for n = {n} ranks",
        "# #wrong: elements of the outputs that differ from the exact expected values, over all "
        "ranks (N/A: not checked)",
    ]
    if (cfg.iters, cfg.warmup) != (NCCL_TESTS_ITERS, NCCL_TESTS_WARMUP):
        lines.append(f"# iters {cfg.iters}, warmup iters {cfg.warmup} (nccl-tests: "
                     f"{NCCL_TESTS_ITERS}, {NCCL_TESTS_WARMUP}): virtual time has no noise; "
                     f"every timed iteration of a size takes the same time")
    lines += [f"# note: {note}" for note in c.notes]
    lines += ["#", "# Using devices"]
    for r in range(n):
        d = topo.devices[r]
        lines.append(f"#  Rank {r:2d} device {d.index:2d} [{d.name}] {d.kind.name} node {d.node}")
    return lines


def section_title(cfg: Config, algo) -> str:
    if algo is not None:
        return f"# algorithm: {algo}"
    rules = load_ccl().rules[cfg.collective.ccl]
    described = ", then ".join(f"{a} up to {m} B" if m is not None else a for m, a in rules)
    if cfg.collective.name == "sendrecv":
        described = "direct (uneven all_to_all_single)"
    return f"# algorithm: default (configs/ccl.yaml: {described})"


def write_json(path, cfg: Config, rows, summary) -> None:
    document = {
        "collective": cfg.collective.name, "topology": cfg.topology.name, "nranks": cfg.nranks,
        "model": cfg.model, "type": cfg.dtype, "iters": cfg.iters, "warmup_iters": cfg.warmup,
        "check": cfg.check, "blocking": cfg.blocking, "busbw_factor": cfg.collective.busbw,
        "columns": list(COLUMNS), "rows": rows, **summary,
    }
    Path(path).write_text(json.dumps(document, indent=1) + "\n")


def write_csv(path, rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(["N/A" if row[k] is None else repr(row[k]) if isinstance(row[k], float)
                             else row[k] for k in COLUMNS])


def read_csv(path) -> list[dict]:
    """The rows of a file written by ``--csv`` (the inverse of ``write_csv``)."""
    ints = {"size_B", "count", "root"}
    with open(path, newline="") as f:
        rows = []
        for raw in csv.DictReader(f):
            row = {}
            for k in COLUMNS:
                v = raw[k]
                if k in ints or k.endswith("_wrong"):
                    row[k] = None if v == "N/A" else int(v)
                elif k.endswith(("_us", "_GBps")):
                    row[k] = float(v)
                else:
                    row[k] = v
            rows.append(row)
    return rows


def _bytes_label(x: float) -> str:
    """8, 1K, 128M: sizes as the -b/-e flags write them."""
    for suffix, unit in (("G", 1024 ** 3), ("M", 1024 ** 2), ("K", 1024)):
        if x >= unit:
            return f"{x / unit:g}{suffix}"
    return f"{x:g}"


def plot(path, cfg: Config, rows) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label in dict.fromkeys(r["algorithm"] for r in rows):
        mine = [r for r in rows if r["algorithm"] == label]
        ax.plot([r["size_B"] for r in mine], [r["out_of_place_busbw_GBps"] for r in mine],
                marker="o", markersize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: _bytes_label(x)))
    ax.set_xlabel("size (B)")
    ax.set_ylabel("busbw (GB/s), out-of-place")
    ax.set_title(f"{cfg.collective.name} on {cfg.topology.name}, {cfg.nranks} ranks, "
                 f"{cfg.dtype}, {cfg.model} model (virtual time)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="algorithm")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- main ------------------------------------------------------------------------------------------

def run_section(cfg: Config, data: Data, k: int, algo, state: dict, out, trace_events: list):
    """One table section (one algorithm, or configs/ccl.yaml's rules): print and return its
    rows; append the trace events of its timed iterations to ``trace_events`` if tracing."""
    label = algo or "default"
    for line in ["#", section_title(cfg, algo), "#"] + column_header():
        print(line, file=out)
    out.flush()
    ccl = load_ccl({"model": cfg.model, **({"algorithms": {cfg.collective.ccl: algo}} if algo else {})})
    progress = sys.stderr.isatty()
    rows, trace_offset_ns = [], 0.0  # each context has its own clock: the trace chains them
    for i, size in enumerate(cfg.sizes):
        if progress:
            sys.stderr.write(f"\r\033[K# {cfg.collective.name} [{label}] {size} B "
                             f"({i + 1} of {len(cfg.sizes)} sizes)")
            sys.stderr.flush()
        results = {}
        for place, in_place in PLACEMENTS:  # a context each, so that memory is freed between
            with coopsim.RuntimeContext(cfg.topology, ccl=ccl) as ctx:
                recorder = ctx.sim.trace(None) if cfg.args.trace else None
                results[place] = measure(ctx, cfg, data, size, in_place, recorder, state)
                if recorder is not None:
                    trace_events += recorder.events(k * (cfg.topology.num_devices + 1),
                                                    f"{label}: " if len(cfg.algos) > 1 else "",
                                                    trace_offset_ns)
                    trace_offset_ns += ctx.engine.now_ns
            del ctx, recorder
            if size >= 1 << 20:  # the spawn's greenlets and closures hold the buffers in
                gc.collect()     # cycles: free large ones now (a collection costs 10-100 ms)
        row = make_row(cfg, size, label, results)
        rows.append(row)
        if progress:
            sys.stderr.write("\r\033[K")
        print(format_row(row), file=out)
        out.flush()
    return rows


def main(argv=None, collective: str = "all_reduce") -> int:
    """Run the bench of ``collective`` with command-line ``argv``; returns the exit status:
    0, 1 if any output was wrong, 2 for bad arguments (argparse)."""
    wall_start = time.perf_counter()
    try:
        cfg = parse_args(argv, COLLECTIVES[collective])
    except SystemExit as e:  # argparse: --help (0) or a bad argument (2)
        return e.code if isinstance(e.code, int) else 2
    out = sys.stdout
    for line in header(cfg):
        print(line, file=out)
    data = Data(cfg)
    rows, trace_events, state = [], [], {"injected": False}
    for k, algo in enumerate(cfg.algos):
        rows += run_section(cfg, data, k, algo, state, out, trace_events)
    results = [(row, place) for row in rows for place, _ in PLACEMENTS]
    failed = sum(1 for row, place in results if row[f"{place}_wrong"])
    avg_busbw = sum(row[f"{place}_busbw_GBps"] for row, place in results) / len(results)
    print(f"# Out of bounds values : {failed} {'FAILED' if failed else 'OK'}", file=out)
    print(f"# Avg bus bandwidth    : {avg_busbw:g}", file=out)
    print("#", file=out)
    if cfg.args.json:
        write_json(cfg.args.json, cfg, rows, {"out_of_bounds": failed, "avg_busbw_GBps": avg_busbw})
    if cfg.args.csv:
        write_csv(cfg.args.csv, rows)
    if cfg.args.trace:
        write_chrome_trace(cfg.args.trace, trace_events, topology=cfg.topology.name,
                           collective=cfg.collective.name)
    if cfg.args.plot:
        plot(cfg.args.plot, cfg, rows)
    print(f"# wall-clock time: {time.perf_counter() - wall_start:.2f} s (the simulation's run "
          f"time on this machine; every time above is virtual)", file=out)
    out.flush()
    return 1 if failed else 0
