"""The flight recorder: each rank's last N collective and point-to-point ops.

Like PyTorch's NCCL flight recorder (``torch/csrc/distributed/c10d/FlightRecorder.hpp``,
``FlightRecorderDetail.hpp``; the dump format read by ``tools/flight_recorder``), each rank
keeps a ring of its last ``capacity`` (default 32) ops, and a dump uses PyTorch's field names
where one exists: ``record_id``, ``pg_id``, ``process_group`` (name, description),
``collective_seq_id``, ``p2p_seq_id``, ``op_id``, ``profiling_name`` (``"nccl:all_reduce"``),
``time_created_ns``, ``input_sizes``, ``input_dtypes``, ``output_sizes``, ``output_dtypes``,
``state`` (``"scheduled"`` | ``"started"`` | ``"completed"``), ``time_discovered_started_ns``,
``time_discovered_completed_ns``, ``duration_ms``, ``retired``, ``timeout_ms``, ``is_p2p``,
``frames`` (``[{"name", "filename", "line"}]``: the user's innermost frame). coopsim adds
``rank``, ``peer`` (p2p), ``where`` (``file:line in function``).

Differences, on purpose (docs/adr/0026-flight-recorder.md): times are virtual ns (the clock
of C10, not the wall clock); sizes are the flat element counts coopsim stages (``[[n]]``);
``time_discovered_started_ns`` is null as in PyTorch without timing enabled.

State: the records of the latest spawn (a new spawn's first op starts a new record), on this
object, which the context owns; nothing in module globals.
"""

from __future__ import annotations

import json

from coopsim.errors import DistTimeoutError, format_ranks
from coopsim.runtime.frames import describe_site, site_line

CAPACITY = 32
# c10::ScalarType names, as PyTorch's dump writes dtypes (``"Float"``)
_SCALAR_TYPES = {"float32": "Float", "float16": "Half", "bfloat16": "BFloat16", "float64": "Double",
                 "int64": "Long", "int32": "Int", "int16": "Short", "int8": "Char", "uint8": "Byte",
                 "bool": "Bool"}


def _snapshot(rank, entry, op_id, p2p_seq) -> dict:
    """PyTorch's fields of one op of ``rank`` as ``record`` kept it, its state read from the
    live op; ``op_id`` and ``p2p_seq`` are its numbers among the rank's ops and p2p ops."""
    group, seq, op, numel_in, numel_out, dtype, done, peer, site, created_ns = entry
    record_id = op_id - 1
    is_p2p = seq is None
    dtype = _SCALAR_TYPES.get(str(dtype).replace("torch.", ""), str(dtype))
    completed = done.done and done.time_ns is not None
    created_ns = int(created_ns)
    where = describe_site(site)
    frames = [] if site is None else [{"name": site[0].co_name, "filename": site[0].co_filename,
                                       "line": site_line(site)}]
    return {
        "record_id": record_id, "rank": rank,
        "pg_id": group.gid, "process_group": (str(group.gid), group.name),
        "collective_seq_id": 0 if is_p2p else seq, "p2p_seq_id": p2p_seq,
        "op_id": op_id, "profiling_name": f"nccl:{op}",
        "time_created_ns": created_ns,
        "input_sizes": [[int(numel_in)]], "input_dtypes": [dtype],
        "output_sizes": [[int(numel_out)]], "output_dtypes": [dtype],
        "state": "completed" if completed else "started" if done.started() else "scheduled",
        "time_discovered_started_ns": None,
        "time_discovered_completed_ns": int(done.time_ns) if completed else None,
        "duration_ms": (done.time_ns - created_ns) / 1e6 if completed else None,
        "retired": completed,
        "timeout_ms": None if group.timeout_ns is None else group.timeout_ns / 1e6,
        "is_p2p": is_p2p, "peer": peer, "where": where, "frames": frames,
    }


class FlightRecorder:
    """``ctx.sim.flight_recorder``: installs itself on the runtime port ``rt``."""

    def __init__(self, rt, capacity: int = CAPACITY):
        if capacity < 1:
            raise ValueError(f"FlightRecorder: capacity must be at least 1, got {capacity!r}")
        self.rt = rt
        self.capacity = capacity
        self._fresh = False  # a spawn started since the last op: its first op starts a new record
        # rank -> a list of its entries (see ``record``), oldest first: it grows to twice the
        # capacity, then its older half goes (one append per op, a trim every ``capacity``
        # ops); rank -> (ops, p2p ops) trimmed so far, which number the entries left
        self._rings: dict = {}
        self._trimmed: dict = {}
        rt.comm_hooks.append(self.record)
        rt.spawn_hooks.append(self._spawn_started)
        rt.error_hooks.append(self.attach)
        rt.add_deadlock_explainer(self.explain)

    def record(self, task, group, seq, op, numel_in, numel_out, dtype, done, peer, site) -> None:
        """The comm hook (``Runtime.comm_hooks``, called by ``distributed.issue``): remember
        one op issued by ``task``, raw (one tuple appended; ``_snapshot`` builds the fields
        when read). ``seq`` is None for a p2p op; ``done`` its Handle (``started()`` says if
        it began); ``site`` the user's ``(code, offset)`` (``runtime.frames.user_site``)."""
        if self._fresh:
            self._fresh, self._rings, self._trimmed = False, {}, {}
        ring = self._rings.get(task.rank)
        if ring is None:
            ring = self._rings[task.rank] = []
        ring.append((group, seq, op, numel_in, numel_out, dtype, done, peer, site,
                     self.rt.engine.now_ns))
        if len(ring) == 2 * self.capacity:
            self._trim(task.rank, ring)

    def _spawn_started(self, _spawn) -> None:
        """The spawn hook: the next op recorded belongs to a new spawn (no test per op)."""
        self._fresh = True

    def _trim(self, rank: int, ring: list) -> None:
        """Drop all but the last ``capacity`` entries, counting the ops they numbered."""
        ops, p2p = self._trimmed.get(rank, (0, 0))
        old = ring[:-self.capacity]
        self._trimmed[rank] = (ops + len(old), p2p + sum(e[1] is None for e in old))
        del ring[:-self.capacity]

    def entries(self) -> dict[int, list[dict]]:
        """``{rank: [record, ...]}`` of the latest spawn, oldest first, states as of now."""
        out = {}
        for rank in sorted(self._rings):
            ring = self._rings[rank]
            ops, p2p = self._trimmed.get(rank, (0, 0))
            kept = len(ring) - self.capacity if len(ring) > self.capacity else 0
            p2p += sum(e[1] is None for e in ring[:kept])
            records = []
            for i, entry in enumerate(ring[kept:], start=ops + kept + 1):
                if entry[1] is None:
                    p2p += 1
                records.append(_snapshot(rank, entry, i, p2p if entry[1] is None else 0))
            out[rank] = records
        return out

    def dump(self, path=None) -> dict:
        """``ctx.sim.dump_flight_record(path)``: the record as PyTorch's dump shapes it
        (``version``, ``pg_config``, ``entries``; coopsim adds ``ranks``: entries per rank),
        written as JSON to ``path`` if given. Returns the dict."""
        ranks = self.entries()
        groups = {}
        for records in ranks.values():
            for r in records:
                groups[str(r["pg_id"])] = {"name": str(r["pg_id"]), "desc": r["process_group"][1]}
        doc = {"version": "coopsim-1", "time_ns": self.rt.engine.now_ns,
               "pg_config": dict(sorted(groups.items())),
               "entries": [r for records in ranks.values() for r in records],
               "ranks": {str(rank): records for rank, records in ranks.items()}}
        if path is not None:
            with open(path, "w") as f:
                json.dump(doc, f, indent=1)
        return doc

    def table(self) -> str:
        """A compact per-rank table: the last completed op and the pending ones."""
        ranks = self.entries()
        if not ranks:
            return ""
        same: dict = {}  # (last completed, pending) -> the ranks that show it, in rank order
        for rank, records in sorted(ranks.items()):
            done = [r for r in records if r["state"] == "completed"]
            pending = [r for r in records if r["state"] != "completed"]
            key = (_describe(done[-1]) if done else "-",
                   "; ".join(f"{_describe(r)} {r['state']} at {r['where'] or '?'}" for r in pending) or "-")
            same.setdefault(key, []).append(rank)
        rows = [("ranks", "last completed", "pending (oldest first)")]  # one row per distinct story
        rows += [(format_ranks(group), *key) for key, group in same.items()]
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        lines = [f"flight record (last {self.capacity} ops of each rank):"]
        lines += ["  " + row[0].ljust(widths[0]) + "  " + row[1].ljust(widths[1]) + "  " + row[2] for row in rows]
        return "\n".join(lines)

    def explain(self, report: dict, tasks) -> None:
        """Deadlock explainer: the table joins the report's details."""
        table = self.table()
        if table:
            report["details"].append(table)

    def attach(self, error) -> None:
        """Error hook: ``error.flight_record`` (and its root causes'); a timeout's message
        gains the table (a deadlock's has it from ``explain``)."""
        if not isinstance(error, Exception) or not self._rings:
            return
        record = self.entries()
        causes = list(getattr(error, "errors", {}).values())
        for e in [error] + causes:
            try:
                e.flight_record = record
            except AttributeError:  # an exception type with __slots__: nothing to attach to
                pass
        if any(isinstance(e, DistTimeoutError) for e in causes) and hasattr(error, "msg"):
            error.msg = f"{error.msg}\n\n{self.table()}"
            error.args = (error.msg,)


def _describe(record: dict) -> str:
    name = record["profiling_name"].split(":", 1)[1]
    if record["is_p2p"]:
        peer = "any" if record["peer"] is None else record["peer"]
        return f"{name}(peer={peer})"
    return f"{name} #{record['collective_seq_id']} on {record['process_group'][1]}"
