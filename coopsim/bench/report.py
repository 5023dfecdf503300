"""The bench's report: nccl-tests' table (header, column headers, rows), the JSON and CSV
files of the same rows, and the busbw plot (docs/adr/0010, "The table", "JSON, CSV, progress",
"Trace and plot").
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from coopsim.bench.options import BUSBW, NCCL_TESTS_ITERS, NCCL_TESTS_WARMUP, Config
from coopsim.distributed.ccl import load_ccl

PLACEMENTS = (("out_of_place", False), ("in_place", True))
RESULT_FIELDS = ("time_us", "algbw_GBps", "busbw_GBps", "wrong")
COLUMNS = ("algorithm", "size_B", "count", "type", "redop", "root") + tuple(
    f"{place}_{field}" for place, _ in PLACEMENTS for field in RESULT_FIELDS) + ("algo", "proto")


def make_row(cfg: Config, size: int, label: str, results: dict, chosen=("-", "-")) -> dict:
    """A table row from ``results``: placement -> (time in us, wrong or None); ``chosen``: the
    (algorithm, protocol) that ran this size (nccl-tests' NCCL_DEBUG=INFO would tell)."""
    c = cfg.collective
    row = {"algorithm": label, "size_B": size, "count": cfg.count(size), "type": cfg.dtype,
           "redop": cfg.op if c.reduces else "none", "root": cfg.root if c.rooted else -1}
    factor = BUSBW[c.busbw](cfg.nranks)
    for place, _ in PLACEMENTS:
        time_us, wrong = results[place]
        algbw = size / (time_us * 1e3) if time_us > 0 else float("inf")  # B/ns = GB/s
        row.update({f"{place}_time_us": time_us, f"{place}_algbw_GBps": algbw,
                    f"{place}_busbw_GBps": algbw * factor, f"{place}_wrong": wrong})
    row["algo"], row["proto"] = chosen
    return row


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
    return line + f"  {row['algo']:>18s}  {row['proto']:>6s}"


def column_header() -> list[str]:
    return [
        "# %10s  %12s  %8s  %6s  %6s           out-of-place                       in-place          "
        % ("", "", "", "", ""),
        "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s %6s  %7s  %6s  %6s %6s  %18s  %6s"
        % ("size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong",
           "time", "algbw", "busbw", "#wrong", "algo", "proto"),
        "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %5s  %7s  %6s  %6s  %5s"
        % ("(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)",
           "(GB/s)", ""),
    ]


def header(cfg: Config) -> list[str]:
    c, topo = cfg.collective, cfg.topology
    n = cfg.nranks
    lines = [
        f"# coopsim {c.name}_perf ({cfg.prog}): nccl-tests' table for a "
        f"simulated machine; times are virtual",
        f"# minBytes {cfg.minbytes} maxBytes {cfg.maxbytes} step: {cfg.step} warmup iters: "
        f"{cfg.warmup} iters: {cfg.iters} validation: {cfg.check} blocking: {cfg.blocking}",
        f"# topology: {topo.name} ({topo.description or topo.source}); ranks: {n}; "
        f"model: {cfg.model}; protocol: {cfg.args.proto or load_ccl().protocol}; type: {cfg.dtype}"
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
        return f"# algorithm: {algo} (the proto column: NCCL's protocol per size)"
    return ("# algorithm: default (coopsim/configs/ccl.yaml's rules for this topology; the algo "
            "and proto columns say what ran at each size)")


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
