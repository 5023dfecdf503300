"""Operations left behind when every rank has ended (a spawn-end check of the runtime port).

A rank may end with a collective or p2p op that it never waited for. If that op still
completes (work in flight), all is well. If it can never complete — a peer skipped the
collective or never posted the matching send/recv, or the op sits behind one that cannot run —
real NCCL hangs at teardown or its watchdog aborts the processes; coopsim raises a
``DeadlockError`` whose report names the op, the ranks that joined it and the ones missing.
"""

from __future__ import annotations

from coopsim.distributed.backend import P2P_RULES
from coopsim.distributed.state import SLOT
from coopsim.errors import DeadlockError


def check_spawn_end(rt) -> None:
    """Raise ``DeadlockError`` if ops of the ending spawn can never complete."""
    state = rt.spawn_state(SLOT)
    if state is None or not _open(state):
        return
    rt.drain()  # what is only in flight completes now
    left = _open(state)
    if left:
        raise DeadlockError(_report(rt, state, left))


def _open(state) -> list:
    """``(rank, kind, thing)`` for each incomplete op: a collective Arrival or a p2p Post.

    An op that failed (mismatch, timeout) is not left over: its error was already raised in
    every member, and a rank that caught it chose to carry on."""
    left = [(rank, "collective", a) for rank in range(len(state.pending)) for a in state.open_collectives(rank)
            if a.done.collective.status not in ("failed", "mismatched")]
    left += [(post.rank, "p2p", post) for post in state.p2p.open_posts() if post.error is None]
    return left


def _report(rt, state, left) -> dict:
    first = {}
    for rank, kind, thing in left:
        first.setdefault(rank, thing.done.member_desc if kind == "collective" else thing.describe())
    rows = [{"rank": t.rank, "task": t.name, "state": t.state,
             "waits_for": f"left incomplete: {first[t.rank]}" if t.rank in first else None,
             "time_ns": t.now_ns, "where": None} for t in rt.spawn.ranks]
    details = ["every rank has ended, but these operations can never complete (real NCCL "
               "would hang at teardown or its watchdog would abort the processes):"]
    seen = set()
    for rank, kind, thing in left:
        if kind == "collective":
            c = thing.done.collective
            if c.name in seen:
                continue
            seen.add(c.name)
            arrived = sorted(c.group.ranks[m] for m in c.arrivals)
            missing = c.missing()
            why = (f"ranks {missing} ended without calling it" if missing
                   else "all arrived; some rank's stream never reached it")
            details.append(f"  {c.name}: arrived {arrived}, missing {missing}: {why}")
            continue
        details.append(f"  rank {rank} {thing.describe().split(' by ')[0]}"
                       f"{' at ' + thing.where if thing.where else ''}: {_why(thing)}")
    for backend in sorted({state.backend_of(post.group, r) for r, kind, post in left if kind == "p2p"}):
        details.append(f"p2p semantics: {P2P_RULES[backend]}")
    return {"time_ns": rt.engine.now_ns, "ranks": rows, "details": details}


def _why(post) -> str:
    match = post.match
    if match is None:
        other = "recv" if post.kind == "send" else "send"
        who = "any rank" if post.peer is None else f"rank {post.peer}"
        return f"no matching {other} was posted by {who}"
    if post.error is not None:
        return f"failed: {post.error}"
    waiting = [side for side in (post, match) if not side.ready]
    if waiting:
        return (f"matched by rank {match.rank}'s {match.describe().split(' by ')[0]}, but the "
                f"stream of rank {waiting[0].rank} never reached its side (it waits for work "
                f"queued before it that cannot complete)")
    return f"matched by rank {match.rank}, transfer never finished"
