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

import collections
import json

from coopsim.errors import DistTimeoutError, format_ranks
from coopsim.runtime.frames import describe_site

CAPACITY = 32
# c10::ScalarType names, as PyTorch's dump writes dtypes (``"Float"``)
_SCALAR_TYPES = {"float32": "Float", "float16": "Half", "bfloat16": "BFloat16", "float64": "Double",
                 "int64": "Long", "int32": "Int", "int16": "Short", "int8": "Char", "uint8": "Byte",
                 "bool": "Bool"}


def _snapshot(entry) -> dict:
    """PyTorch's fields of one op as ``record`` kept it, its state read from the live op."""
    rank, group, seq, op, numel_in, numel_out, dtype, done, peer, code, line, created_ns, op_id, p2p_seq = entry
    site = None if code is None else (code, line)
    record_id = op_id - 1
    is_p2p = seq is None
    dtype = _SCALAR_TYPES.get(str(dtype).replace("torch.", ""), str(dtype))
    completed = done.done and done.time_ns is not None
    created_ns = int(created_ns)
    where = describe_site(site)
    frames = [] if site is None else [{"name": site[0].co_name, "filename": site[0].co_filename,
                                       "line": site[1]}]
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
        self.rt = rt
        self.capacity = capacity
        self._spawn = None
        # rank -> deque of entries (see ``record``); rank -> ops, p2p ops recorded (dicts of
        # ints, which the garbage collector does not track: fewer objects for it to walk)
        self._rings: dict = {}
        self._ops: dict = {}
        self._p2p: dict = {}
        rt.comm_hooks.append(self.record)
        rt.error_hooks.append(self.attach)
        rt.add_deadlock_explainer(self.explain)

    def record(self, task, group, seq, op, numel_in, numel_out, dtype, done, peer, site) -> None:
        """The comm hook (``Runtime.comm_hooks``, called by ``distributed.issue``): remember
        one op issued by ``task``, raw (a tuple; ``_snapshot`` builds the fields when read).
        ``seq`` is None for a p2p op; ``done`` its Handle (``started()`` says if it began);
        ``site`` the user's ``(code, line)`` (``runtime.frames.user_site``)."""
        spawn = self.rt.spawn
        if spawn is not self._spawn:
            self._spawn, self._rings, self._ops, self._p2p = spawn, {}, {}, {}
        rank = task.rank
        ring = self._rings.get(rank)
        if ring is None:
            ring = self._rings[rank] = collections.deque(maxlen=self.capacity)
        ops = self._ops[rank] = self._ops.get(rank, 0) + 1
        if seq is None:
            p2p_seq = self._p2p[rank] = self._p2p.get(rank, 0) + 1
        else:
            p2p_seq = 0
        code, line = (None, None) if site is None else site  # kept flat: no tuple per entry
        ring.append((rank, group, seq, op, numel_in, numel_out, dtype, done, peer, code, line,
                     self.rt.engine.now_ns, ops, p2p_seq))

    def entries(self) -> dict[int, list[dict]]:
        """``{rank: [record, ...]}`` of the latest spawn, oldest first, states as of now."""
        return {rank: [_snapshot(e) for e in self._rings[rank]] for rank in sorted(self._rings)}

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
