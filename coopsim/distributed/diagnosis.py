"""Deadlock diagnosis for the distributed layer, registered with the runtime port.

On a deadlock the scheduler builds one row per task; ``explain_deadlock`` adds what only
this layer knows: for a rank stuck behind a collective, the op, group, sequence number, who
arrived, who is missing and what the missing ranks are doing; for point-to-point, the
wait-for cycle.
"""

from __future__ import annotations

from coopsim.distributed.backend import P2P_RULES
from coopsim.distributed.state import SLOT
from coopsim.errors import format_ranks, generic


def explain_deadlock(rt, report: dict, tasks) -> None:
    """Add to a deadlock report what the distributed layer knows: for a rank stuck behind a
    collective, the op, group, sequence number, who arrived, who is missing and what the
    missing ranks are doing; for point-to-point, the wait-for cycle."""
    state = rt.spawn_state(SLOT)
    if state is None:
        return
    rows = report["ranks"]
    by_rank = {row["rank"]: row for row in rows if row["task"] == f"rank {row['rank']}"}
    peers = {}
    seen = set()
    for row, task in zip(rows, tasks):
        if row["state"] != "blocked" or task.owner is not None:
            continue
        h = task.waiting
        p2p = state.p2p.waits_on(h)
        if p2p is not None:
            peers[task.rank] = p2p
            continue
        own = getattr(h, "collective", None)  # a host read waits on the member part itself
        oldest = state.open_collectives(task.rank)[:1]
        oldest = oldest[0].done.collective if oldest else None
        collective = own if own is not None else oldest
        if collective is None or collective.status in ("done", "failed", "mismatched"):
            continue
        arrived = sorted(collective.group.ranks[m] for m in collective.arrivals)
        missing = collective.missing()
        row["collective"] = {"op": collective.kind, "group": collective.group.name,
                             "seq": collective.seq, "arrived": arrived, "missing": missing}
        if oldest is not None and oldest is not own:  # its streams reach ``own`` after ``oldest``
            row["waits_for"] = f"{row['waits_for']}, behind {oldest.name} on its stream"
        if collective.name in seen:
            continue
        seen.add(collective.name)
        line = (f"{collective.name}: arrived {format_ranks(arrived) if arrived else 'none'}, "
                f"missing {format_ranks(missing) if missing else 'none'}")
        doings: dict = {}  # what the missing ranks do -> those ranks (alike ones once)
        for r in missing:
            other = by_rank.get(r)
            if other is None:
                continue
            if other["state"] == "blocked":
                doing = f"blocked at {other['where']} waiting for {generic(other['waits_for'], r)}"
            else:
                doing = other["state"]
            doings.setdefault(doing, []).append(r)
        for doing, ranks in doings.items():
            who = f"rank {ranks[0]} is" if len(ranks) == 1 else f"ranks {format_ranks(ranks)} are"
            line += f"\n    {who} {doing}"
        if not missing:
            line += " (all arrived; some stream never reached it)"
        report["details"].append(line)
    for cycle in _cycles(peers):
        chain = " -> ".join(f"rank {r} {peers[r][1].split(' by ')[0]}" for r in cycle)
        report["details"].append(f"point-to-point wait-for cycle: {chain} -> rank {cycle[0]}")
        for r in cycle:
            by_rank[r]["cycle"] = list(cycle)
    for backend in sorted({state.semantics[r] for r in peers}):  # the ranks' defaults
        report["details"].append(f"p2p semantics: {P2P_RULES[backend]}")


def _cycles(peers: dict) -> list[list[int]]:
    """Cycles in the graph rank -> the peer it waits for, each once, from its lowest rank."""
    cycles, done = [], set()
    for start in sorted(peers):
        path, r = [], start
        while r in peers and r not in path and r not in done:
            path.append(r)
            r = peers[r][0]
        if r in path:
            cycle = path[path.index(r):]
            low = cycle.index(min(cycle))
            cycles.append(cycle[low:] + cycle[:low])
        done.update(path)
    return cycles

