"""Schedule exploration and replay: run a program under many deterministic schedules.

A *schedule* decides the three things coopsim otherwise fixes (docs/adr/0025-testing-hooks.md):

- the order in which a round resumes its runnable tasks (``round``);
- the order in which completions due at the same virtual instant run (``instant``);
- which sender a ready ``recv(src=None)`` takes when several have posted (``choose``; only
  among each sender's oldest send, so a sender's messages never overtake each other).

Schedule 0 of every exploration is coopsim's default order, so ``schedules=1`` runs the
program exactly as ``spawn`` does. Schedule ``i > 0`` is drawn from a ``random.Random``
seeded by the string ``"coopsim/<strategy>/<seed>/<i>"`` (string seeds are hashed with
SHA-512, not ``hash()``: the same in every process, C9), so a *replay token* — strategy, seed,
index and the strategy's parameters — names a schedule completely.

Strategies:

- ``"random"``: uniform — each round, each instant and each wildcard match is shuffled.
- ``"pct"``: probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi, Nagarakatte,
  "A Randomized Scheduler with Probabilistic Guarantees of Finding Bugs", ASPLOS 2010): every
  task gets a random priority above ``depth``; ``depth - 1`` change points are drawn among the
  ``steps`` task resumptions of the default run; a round runs its tasks by decreasing
  priority, and the task resumed at change point ``i`` drops to priority ``i``. A wildcard
  receive takes the highest-priority sender. Instants keep their order (PCT orders threads).
"""

from __future__ import annotations

import hashlib
import random

TOKEN_PREFIX = "coopsim"
STRATEGIES = ("random", "pct")


class ScheduleFailure(AssertionError):
    """A schedule under which the program failed. ``token`` replays it (``ctx.sim.replay``,
    ``pytest --coopsim-replay``); ``error`` is the program's own failure (also the
    ``__cause__``); ``digest`` fingerprints every scheduling decision taken (equal digests:
    the same schedule, bit for bit); ``flight_record`` is the error's, if it has one."""

    def __init__(self, token: str, index: int, schedules: int, error: BaseException, digest: str):
        self.token = token
        self.index = index
        self.schedules = schedules
        self.error = error
        self.digest = digest
        self.flight_record = getattr(error, "flight_record", None)
        if schedules == 0:
            where = "the replayed schedule"
        else:
            where = f"schedule {index} of {schedules}" + (" (the default order)" if index == 0 else "")
        super().__init__(
            f"{where} failed; replay it with ctx.sim.replay({token!r}) or "
            f"pytest --coopsim-replay={token}\n{type(error).__name__}: {error}")


class Schedule:
    """One schedule: the default order, or a strategy's draw. ``steps`` counts task
    resumptions; ``digest()`` hashes every decision taken so far."""

    def __init__(self, strategy: str = "default", seed: int = 0, index: int = 0, **params):
        self.strategy = strategy if index else "default"
        self.seed, self.index, self.params = seed, index, params
        self.steps = 0
        self._hash = hashlib.sha256()
        self.rng = random.Random(f"{TOKEN_PREFIX}/{strategy}/{seed}/{index}")

    @property
    def token(self) -> str:
        params = "".join(f":{k}={v}" for k, v in sorted(self.params.items()))
        return f"{TOKEN_PREFIX}:{self.strategy}:seed={self.seed}:index={self.index}{params}"

    def digest(self) -> str:
        return self._hash.hexdigest()

    def _log(self, what: str, items) -> None:
        self._hash.update(f"{what}{items!r};".encode())

    def round(self, batch: list) -> None:
        """Order a round's tasks in place (the default: ascending task key, as C5 says)."""
        self._order(batch)
        self.steps += len(batch)
        self._log("r", [t.key for t in batch])

    def _order(self, batch: list) -> None:
        batch.sort(key=lambda t: t.key)

    def instant(self, handles: list) -> None:
        """Order the completions due at one instant in place (default: as scheduled)."""

    def choose(self, sends: list):
        """The send a wildcard receive takes among ``sends`` (each sender's oldest, by rank)."""
        chosen = self._choose(sends)
        self._log("c", chosen.rank)
        return chosen

    def _choose(self, sends: list):
        return sends[0]

    def install(self, rt) -> None:
        """Make the runtime port ``rt`` follow this schedule."""
        rt.strategy = self
        if type(self).instant is not Schedule.instant:
            rt.engine.reorder = self.instant


class RandomSchedule(Schedule):
    """Uniform random: every round, instant and wildcard match shuffled."""

    def _order(self, batch: list) -> None:
        batch.sort(key=lambda t: t.key)  # a canonical start, whatever order they woke in
        self.rng.shuffle(batch)

    def instant(self, handles: list) -> None:
        if len(handles) > 1:
            self.rng.shuffle(handles)

    def _choose(self, sends: list):
        return self.rng.choice(sends)


class PCTSchedule(Schedule):
    """PCT (ASPLOS 2010): random priorities, ``depth - 1`` change points in ``steps``."""

    def __init__(self, strategy="pct", seed=0, index=0, *, depth: int = 3, steps: int = 1):
        super().__init__(strategy, seed, index, depth=depth, steps=steps)
        self.priority: dict = {}
        count = min(depth - 1, steps)
        points = self.rng.sample(range(1, steps + 1), count) if count > 0 else []
        self.change_points = {step: i + 1 for i, step in enumerate(points)}  # step -> new priority

    def _order(self, batch: list) -> None:
        priority, depth = self.priority, self.params["depth"]
        for t in sorted(batch, key=lambda t: t.key):
            if t.key not in priority:
                priority[t.key] = depth + self.rng.random()
        batch.sort(key=lambda t: -priority[t.key])
        for i, t in enumerate(batch, start=self.steps + 1):
            if i in self.change_points:
                priority[t.key] = self.change_points[i]

    def _choose(self, sends: list):
        priority = self.priority
        return max(sends, key=lambda post: priority.get(post.task.key, 0))


def make_schedule(strategy: str, seed: int, index: int, depth: int = 3, steps: int = 1) -> Schedule:
    if index == 0:
        return Schedule()
    if strategy == "random":
        return RandomSchedule("random", seed, index)
    if strategy == "pct":
        return PCTSchedule("pct", seed, index, depth=depth, steps=steps)
    raise ValueError(f"explore: strategy must be one of {STRATEGIES}, got {strategy!r}")


def parse_token(token: str) -> Schedule:
    """The schedule a replay token names (raises ValueError naming the token if malformed)."""
    parts = token.split(":") if isinstance(token, str) else []
    try:
        if parts[0] != TOKEN_PREFIX:
            raise ValueError
        if parts[1] == "default":
            return Schedule()
        fields = dict(p.split("=", 1) for p in parts[2:])
        return make_schedule(parts[1], int(fields.pop("seed")), int(fields.pop("index")),
                             **{k: int(v) for k, v in fields.items()})
    except (ValueError, KeyError, IndexError, TypeError):
        raise ValueError(f"replay: {token!r} is not a coopsim replay token (expected "
                         f"'coopsim:<strategy>:seed=S:index=I[:param=V...]', as printed by a "
                         f"failed exploration)") from None


class Explorer:
    """``ctx.sim.explore`` and ``ctx.sim.replay`` of one context (``ctx``).

    Every schedule runs on a fresh context made by ``fresh()`` (the same topology, seed and
    settings, so virtual times and traces match bit for bit); an argument of ``args`` that is
    ``ctx`` itself is replaced by that fresh context. ``prepare(fresh_ctx)`` copies what else
    the run needs (the fault plan).
    """

    def __init__(self, ctx, fresh, prepare=None):
        self._ctx = ctx
        self._fresh = fresh
        self._prepare = prepare
        self._last = None  # (fn, args, nprocs) of the latest exploration, for replay(token)

    def explore(self, fn, args=(), nprocs=1, *, schedules: int = 1, seed: int = 0,
                strategy: str = "random", depth: int = 3) -> dict:
        """Run ``spawn(fn, args, nprocs)`` under ``schedules`` schedules; raise
        ``ScheduleFailure`` (with a replay token) at the first that fails. Returns
        ``{"schedules": n, "distinct": number of distinct schedules seen}``."""
        if isinstance(schedules, bool) or not isinstance(schedules, int) or schedules < 1:
            raise ValueError(f"explore: schedules must be an int >= 1, got {schedules!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"explore: strategy must be one of {STRATEGIES}, got {strategy!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"explore: depth must be an int >= 1, got {depth!r}")
        self._last = (fn, args, nprocs)
        steps, digests = 1, set()
        for index in range(schedules):
            schedule = make_schedule(strategy, seed, index, depth, steps)
            error = self.run(schedule, fn, args, nprocs)
            if index == 0:
                steps = max(schedule.steps, 1)  # PCT draws its change points among these
            digests.add(schedule.digest())
            if error is not None:
                raise ScheduleFailure(schedule.token, index, schedules, error, schedule.digest()) from error
        return {"schedules": schedules, "distinct": len(digests)}

    def replay(self, token: str, fn=None, args=(), nprocs=1) -> str:
        """Rerun exactly the schedule ``token`` names, of ``spawn(fn, args, nprocs)`` (without
        ``fn``: of the latest exploration's program); raise ``ScheduleFailure`` if it fails,
        else return the schedule's digest."""
        schedule = parse_token(token)
        if fn is None:
            if self._last is None:
                raise ValueError("replay: give fn (and args, nprocs): this context has explored nothing yet")
            fn, args, nprocs = self._last
        error = self.run(schedule, fn, args, nprocs)
        if error is not None:
            raise ScheduleFailure(schedule.token, schedule.index, 0, error, schedule.digest()) from error
        return schedule.digest()

    def run(self, schedule: Schedule, fn, args, nprocs) -> Exception | None:
        """Run one spawn on a fresh context under ``schedule``; its Exception, or None."""
        if not isinstance(args, tuple):
            raise TypeError(f"explore: args must be a tuple, got {type(args).__name__}")
        with self._fresh() as ctx:
            if self._prepare is not None:
                self._prepare(ctx)
            schedule.install(ctx.sim.runtime)
            try:
                ctx.multiprocessing.spawn(fn, tuple(ctx if a is self._ctx else a for a in args), nprocs=nprocs)
            except Exception as e:  # noqa: BLE001 - any failure of the program is the finding
                return e
        return None
