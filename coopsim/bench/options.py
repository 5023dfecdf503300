"""The bench's arguments: nccl-tests' flags parsed and validated into a ``Config``.

Every bad value is refused here, before anything runs: one line on stderr naming the flag,
what is wrong and what is accepted, exit status 2 (docs/adr/0010, "Errors").
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from coopsim.distributed.algorithms import algorithms_for
from coopsim.distributed.algorithms.protocols import CHOICES as PROTOCOL_CHOICES
from coopsim.distributed.ccl import MODELS, load_ccl
from coopsim.topology import TopologyError, bundled_topologies, load_topology

DEFAULT_TOPOLOGY = "dgx_h100"
DEFAULT_MINBYTES = 8
DEFAULT_MAXBYTES = 128 * 1024 * 1024
DEFAULT_ITERS = 5  # nccl-tests: 20 (virtual time has no noise; see ADR-0010)
DEFAULT_WARMUP = 1  # nccl-tests: 5
DEFAULT_STEPBYTES = 1024 * 1024  # with -f 1, as nccl-tests
NCCL_TESTS_ITERS, NCCL_TESTS_WARMUP = 20, 5
SUFFIXES = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


@dataclass(frozen=True)
class DataType:
    """An nccl-tests element type: the context's dtype of that name (``torch``), its bytes
    an element, and the numpy type the expected values are computed in (bfloat16: float32,
    rounded to bfloat16 values, as coopsim stores it)."""

    torch: str
    itemsize: int
    numpy: type

    @property
    def is_floating_point(self) -> bool:
        return bool(np.issubdtype(self.numpy, np.floating))


# nccl-tests type names; torch spellings accepted as aliases
DATATYPES = {"float": DataType("float32", 4, np.float32), "half": DataType("float16", 2, np.float16),
             "bfloat16": DataType("bfloat16", 2, np.float32), "int32": DataType("int32", 4, np.int32),
             "int64": DataType("int64", 8, np.int64)}
TYPE_ALIASES = {"float32": "float", "float16": "half", "bf16": "bfloat16", "int": "int32"}
OPS = {"sum": "SUM", "prod": "PRODUCT", "min": "MIN", "max": "MAX", "avg": "AVG"}
BUSBW = {"2(n-1)/n": lambda n: 2 * (n - 1) / n, "(n-1)/n": lambda n: (n - 1) / n,
         "1": lambda n: 1.0}


@dataclass(frozen=True)
class Collective:
    """What differs between the benches: everything else is shared."""

    name: str  # all_reduce, ...
    bench: str  # the bench's name: python -m coopsim.bench BENCH, python -m benches.BENCH
    ccl: str  # its key in coopsim/configs/ccl.yaml (which algorithm runs it)
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
        "all_to_all_single with one non-empty split",
        "in-place sendrecv is not checked (#wrong N/A), as in nccl-tests")),
)}
BENCHES = {c.bench: c for c in COLLECTIVES.values()}  # the first argument of python -m coopsim.bench


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


def make_parser(collective: Collective, prog: str) -> _Parser:
    parser = _Parser(
        prog=prog,
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
             f"{', '.join(algorithms_for(collective.ccl))}; default: the rules of "
             f"coopsim/configs/ccl.yaml)")
    add("--model", choices=MODELS, default=None,
        help="collective timing model (default: coopsim/configs/ccl.yaml's, transfer)")
    add("--proto", choices=PROTOCOL_CHOICES, default=None,
        help="NCCL protocol, as NCCL_PROTO: auto (NCCL's choice per size), LL, LL128, Simple, "
             "or ideal (none, even where the topology runs NCCL's protocols); default: "
             "coopsim/configs/ccl.yaml's, auto")
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
    prog: str  # the command, as the header and the errors name it
    topology: object
    nranks: int
    sizes: list
    algos: list  # None: coopsim/configs/ccl.yaml's rules
    model: str
    dtype: str  # nccl-tests name, a key of DATATYPES
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
    def datatype(self) -> DataType:
        return DATATYPES[self.dtype]

    def dt(self, ctx):
        """The element type as the context ``ctx`` names it (``ctx.float32``, ...)."""
        return getattr(ctx, self.datatype.torch)

    @property
    def itemsize(self) -> int:
        return self.datatype.itemsize

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

    def output_elements(self, size: int) -> int:
        """Elements of one rank's output buffer."""
        c = self.count(size)
        return c * self.nranks if self.collective.name in ("all_gather", "alltoall") else c


def parse_args(argv, collective: Collective, prog: str) -> Config:
    """The ``Config`` of ``argv``; a bad argument exits 2 with one line on stderr."""
    parser = make_parser(collective, prog)
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
    cfg = Config(collective, prog, topology, nranks, [], algos,
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
