"""Fault injection: ``ctx.sim.faults`` (nothing of it on the torch-shaped surface).

Kinds (each also a dict, a list of which — or the same as YAML — ``load`` accepts):

- ``kill``  ``{kind: kill, rank: R, at_ns: T}`` or ``{kind: kill, rank: R, at_collective: K}``:
  rank R dies at virtual time T (wherever it waits) or when it calls its K-th collective
  (1-based, before arriving). It vanishes as a killed process does: its ``finally`` blocks
  run, no error is raised in it, and its peers see it missing — their collectives with it
  hang, so the run ends in a ``DeadlockError`` naming it, or a ``DistTimeoutError`` if the
  clock reaches the group's timeout.
- ``slow``  ``{kind: slow, rank: R, factor: X}``: the device ops of device R (rank R's
  ``cuda:R``) take X times longer.
- ``link``  ``{kind: link, src: A, dst: B, bandwidth_factor: F, latency_ns: L, down: false}``:
  every link of the route from device A to device B carries F times its bandwidth and adds L
  ns of latency; ``down: true`` fails it: a transfer that must cross it raises
  ``LinkDownError`` (no rerouting: docs/adr/0025-testing-hooks.md).
- ``delay`` ``{kind: delay, rank: R, collective: NAME, delay_ns: D, occurrence: N}``: rank R
  waits D ns of virtual time before arriving at its N-th call of collective NAME (every call
  if ``occurrence`` is omitted).

Faults are deterministic (virtual times and call counts, no randomness: C9); they apply to
every spawn of the context from the next one on; the ones that fired are listed in deadlock
reports and in the message of a spawn's failure (and in ``fired``).
"""

from __future__ import annotations

import yaml

from coopsim.engine import Handle
from coopsim.errors import DeadlockError, ProcessExitedException
from coopsim.runtime.scheduler import RankAborted

_KEYS = {
    "kill": ({"rank"}, {"at_ns", "at_collective"}),
    "slow": ({"rank", "factor"}, set()),
    "link": ({"src", "dst"}, {"bandwidth_factor", "latency_ns", "down"}),
    "delay": ({"rank", "collective", "delay_ns"}, {"occurrence"}),
}


class RankKilled(RankAborted):
    """Thrown into (or raised in) a rank that a ``kill`` fault kills."""


class Faults:
    """``ctx.sim.faults`` of one context; installs its hooks on the runtime port ``rt``."""

    def __init__(self, rt):
        self.rt = rt
        self.specs: list[dict] = []  # as given, checked (copied to explored contexts)
        self.fired: list[str] = []  # the faults that took effect in the latest spawn, in order
        self._calls: dict = {}  # (rank, op or None) -> calls in the running spawn
        self._killed: list[int] = []  # ranks killed in the running spawn, in kill order
        rt.spawn_hooks.append(self._arm)
        rt.spawn_checks.insert(0, self._check_killed)  # a dead rank is the root cause: first
        rt.before_collective.append(self._before_collective)
        rt.error_hooks.append(self._attach)
        rt.add_deadlock_explainer(self._explain)

    # -- the public API ---------------------------------------------------------------------

    def kill(self, rank: int, *, at_ns: float | None = None, at_collective: int | None = None) -> None:
        self.add({"kind": "kill", "rank": rank, "at_ns": at_ns, "at_collective": at_collective})

    def slow(self, rank: int, factor: float) -> None:
        self.add({"kind": "slow", "rank": rank, "factor": factor})

    def link(self, src: int, dst: int, *, bandwidth_factor: float = 1.0, latency_ns: float = 0.0,
             down: bool = False) -> None:
        self.add({"kind": "link", "src": src, "dst": dst, "bandwidth_factor": bandwidth_factor,
                  "latency_ns": latency_ns, "down": down})

    def delay(self, rank: int, collective: str, delay_ns: float, *, occurrence: int | None = None) -> None:
        self.add({"kind": "delay", "rank": rank, "collective": collective, "delay_ns": delay_ns,
                  "occurrence": occurrence})

    def load(self, faults) -> None:
        """Add faults from a list of dicts, or YAML text of such a list."""
        if isinstance(faults, str):
            faults = yaml.safe_load(faults)
        if isinstance(faults, dict):
            faults = [faults]
        if not isinstance(faults, list):
            raise TypeError(f"faults: expected a list of fault dicts (or its YAML), got {type(faults).__name__}")
        checked = [self._checked(spec, f"faults[{i}]") for i, spec in enumerate(faults)]
        for spec in checked:  # all or nothing
            self._apply(spec)

    def add(self, spec: dict, where: str = "fault") -> None:
        """Check one fault dict and apply it (static faults at once, the others per spawn)."""
        self._apply(self._checked(spec, where))

    def _checked(self, spec, where: str) -> dict:
        spec = _checked(spec, where)
        for key in ("rank", "src", "dst"):
            index = spec.get(key)
            if index is not None and index >= len(self.rt.devices):
                raise ValueError(f"{where}: {key} {index} does not exist on topology "
                                 f"{self.rt.topology.name!r} ({len(self.rt.devices)} devices)")
        return spec

    def _apply(self, spec: dict) -> None:
        if spec["kind"] == "slow":
            self.rt.devices[spec["rank"]].slowdown *= spec["factor"]
        elif spec["kind"] == "link":
            self.rt.network.settle()  # a closed-form run in flight meets the fault from now (ADR-0031)
            faults = self.rt.network.link_faults
            for link in self.rt.topology.route(spec["src"], spec["dst"]):
                factor, added = faults.get(link.index, (1.0, 0.0))
                factor = 0 if spec["down"] else factor * spec["bandwidth_factor"]
                faults[link.index] = (factor, added + spec["latency_ns"])
        self.specs.append(spec)

    def describe(self) -> list[str]:
        """One line per fault, as given."""
        return [_describe(spec) for spec in self.specs]

    # -- hooks ------------------------------------------------------------------------------

    def _arm(self, spawn) -> None:
        self.fired, self._calls, self._killed = [], {}, []
        engine = self.rt.engine
        for spec in self.specs:
            if spec["kind"] == "kill" and spec["at_ns"] is not None and spec["rank"] < len(spawn.ranks):
                alarm = engine.alarm(Handle(f"fault: kill rank {spec['rank']}"), max(spec["at_ns"], engine.now_ns))
                alarm.add_callback(lambda _h, spec=spec, spawn=spawn: self._kill_at_time(spec, spawn))

    def _kill_at_time(self, spec, spawn) -> None:
        task = spawn.ranks[spec["rank"]]
        if self.rt.spawn is not spawn or task.greenlet.dead:
            return
        self.fired.append(f"killed rank {spec['rank']} at {self.rt.engine.now_ns:g} ns")
        self._killed.append(spec["rank"])
        self.rt.interrupt(task, RankKilled(f"rank {spec['rank']} killed by a fault"))

    def _before_collective(self, op: str, task) -> None:
        if not self.specs:  # no faults, nothing to count (faults are given before the spawn: _arm)
            return
        rank = task.rank
        count = self._calls[rank, None] = self._calls.get((rank, None), 0) + 1
        nth = self._calls[rank, op] = self._calls.get((rank, op), 0) + 1
        for spec in self.specs:
            if spec.get("rank") != rank:
                continue
            if spec["kind"] == "kill" and spec["at_collective"] == count:
                self.fired.append(f"killed rank {rank} at its collective #{count} ({op})")
                self._killed.append(rank)
                raise RankKilled(f"rank {rank} killed by a fault at its collective #{count}")
            if spec["kind"] == "delay" and spec["collective"] == op and spec["occurrence"] in (None, nth):
                self.fired.append(f"delayed rank {rank} by {spec['delay_ns']:g} ns at {op} call #{nth}")
                self.rt.wait(self.rt.engine.timer(spec["delay_ns"], f"fault: delay before {op}"))

    def _check_killed(self) -> None:
        """At the end of a spawn whose other ranks finished: a killed rank makes ``spawn``
        raise what torch's would, ``ProcessExitedException`` (SIGKILL), with the faults."""
        if not self._killed:
            return
        rank = self._killed[0]
        pid = self.rt.spawn.ranks[rank].pid
        raise ProcessExitedException(f"process {rank:d} terminated with signal SIGKILL\n\n{self._summary()}",
                                     error_index=rank, error_pid=pid, exit_code=-9, signal_name="SIGKILL")

    def _explain(self, report: dict, tasks) -> None:
        if self.specs:
            report["details"].append(self._summary())

    def _attach(self, error) -> None:
        if not self.specs or not isinstance(error, Exception):
            return
        error.faults = list(self.specs)
        if hasattr(error, "msg") and not isinstance(error, DeadlockError):  # a deadlock's has it
            error.msg = f"{error.msg}\n\n{self._summary()}"
            error.args = (error.msg,)

    def _summary(self) -> str:
        lines = ["faults injected (ctx.sim.faults):"] + [f"  {line}" for line in self.describe()]
        lines += [f"  fired: {line}" for line in self.fired]
        return "\n".join(lines)


def _checked(spec, where: str) -> dict:
    if not isinstance(spec, dict) or spec.get("kind") not in _KEYS:
        raise ValueError(f"{where}: expected a dict with kind one of {sorted(_KEYS)}, got {spec!r}")
    required, optional = _KEYS[spec["kind"]]
    keys = set(spec) - {"kind"}
    if not required <= keys or not keys <= required | optional:
        raise ValueError(f"{where}: a {spec['kind']} fault takes keys {sorted(required)} and "
                         f"optionally {sorted(optional)}; got {sorted(keys)}")
    spec = {"kind": spec["kind"], **{k: spec.get(k) for k in sorted(required | optional)}}
    for key in ("rank", "src", "dst", "at_collective", "occurrence"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{where}: {key} must be an int >= 0, got {value!r}")
    for key in ("at_ns", "factor", "bandwidth_factor", "latency_ns", "delay_ns"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"{where}: {key} must be a number >= 0, got {value!r}")
    if spec["kind"] == "kill" and (spec["at_ns"] is None) == (spec["at_collective"] is None):
        raise ValueError(f"{where}: a kill fault takes exactly one of at_ns and at_collective")
    if spec["kind"] == "slow" and not spec["factor"] > 0:
        raise ValueError(f"{where}: factor must be > 0, got {spec['factor']!r}")
    if spec["kind"] == "link":
        spec["bandwidth_factor"] = 1.0 if spec["bandwidth_factor"] is None else spec["bandwidth_factor"]
        spec["latency_ns"] = 0.0 if spec["latency_ns"] is None else spec["latency_ns"]
        spec["down"] = bool(spec["down"])
        if not spec["down"] and not spec["bandwidth_factor"] > 0:
            raise ValueError(f"{where}: bandwidth_factor must be > 0 (use down: true for a failed link)")
    return spec


def _describe(spec: dict) -> str:
    kind = spec["kind"]
    if kind == "kill":
        when = f"at {spec['at_ns']:g} ns" if spec["at_ns"] is not None else f"at its collective #{spec['at_collective']}"
        return f"kill rank {spec['rank']} {when}"
    if kind == "slow":
        return f"slow rank {spec['rank']}: device ops x{spec['factor']:g}"
    if kind == "link":
        if spec["down"]:
            return f"link(s) from device {spec['src']} to {spec['dst']} down"
        return (f"link(s) from device {spec['src']} to {spec['dst']}: bandwidth x{spec['bandwidth_factor']:g}, "
                f"+{spec['latency_ns']:g} ns latency")
    which = "every call" if spec["occurrence"] is None else f"call #{spec['occurrence']}"
    return f"delay rank {spec['rank']} by {spec['delay_ns']:g} ns before {spec['collective']} ({which})"
