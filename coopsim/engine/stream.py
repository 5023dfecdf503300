"""In-order streams of device work, like CUDA streams."""

from __future__ import annotations

from coopsim.engine.core import Engine, Handle, all_of


class Stream:
    """An in-order queue of device operations.

    Invariants:
    - ops complete in the order they were enqueued;
    - an op starts when the previous op on the stream has completed and every handle in its
      ``deps`` has completed, and then lasts ``duration_ns``;
    - an op's ``fn`` (its effect, e.g. computing the numbers) runs when the op completes,
      inside the engine step, before anything waiting on the op is woken.

    ``_tail_ns`` is the completion time of the last op while it is known; it is None while
    the last op waits for something whose completion time is not known yet.

    ``trace`` is the ``TraceRecorder`` of an active ``ctx.sim.trace`` (None otherwise: then
    the hooks cost one attribute check per op).
    """

    __slots__ = ("engine", "name", "last", "_tail_ns", "trace")

    def __init__(self, engine: Engine, name: str):
        self.engine = engine
        self.name = name
        self.last: Handle | None = None
        self._tail_ns: float | None = 0.0
        self.trace = None

    def enqueue(self, duration_ns: float, desc, fn=None, deps=()) -> Handle:
        """Enqueue an op of ``duration_ns``; returns the Handle that completes with it."""
        engine = self.engine
        op = Handle(desc)
        if fn is not None:
            op.callbacks = [lambda _op: fn()]
        blockers = [d for d in deps if not d.done] if deps else []
        tail = self._tail_ns
        if tail is None:
            tail = self._known_tail()
        if tail is not None and not blockers:
            end = (tail if tail > engine.now_ns else engine.now_ns) + duration_ns
            engine.schedule(op, end)
            self._tail_ns = end
        else:
            if self.last is not None and not self.last.done:
                blockers.append(self.last)
            self._tail_ns = None
            self._start_after(op, duration_ns, blockers)
        self.last = op
        if self.trace is not None:
            self.trace.stream_op(self, op, duration_ns)
        return op

    def enqueue_work(self, desc, start, delay_ns: float = 0.0, deps=(), op=None) -> Handle:
        """Enqueue an op whose duration is not known in advance.

        ``delay_ns`` after the op could start (stream order and ``deps``), ``start()`` is
        called (inside an engine step) and returns a Handle; the op completes with it.
        ``op``: the op's Handle, made by the caller (then ``desc`` is unused); ``start()`` may
        return ``op`` itself: the op is its own work, completed by whoever owns it (a
        collective's member part: one handle and one event per call instead of two).
        """
        if op is None:
            op = Handle(desc)
        timer = _new_start(self, op, start, delay_ns)
        last = self.last
        if not deps and self._tail_ns is None and last is not None and not last.done:
            last.add_callback(timer.after)  # the common case: right after the op before, whenever it ends
        else:
            self._start_work(timer, deps)
        self._tail_ns = None  # the op's end is known only once its work completes
        self.last = op
        return op

    def _start_work(self, timer: "_Start", deps) -> None:
        """Schedule ``timer`` after the stream's last op and ``deps``, ``timer.delay_ns`` later."""
        engine = self.engine
        blockers = [d for d in deps if not d.done]
        tail = self._known_tail()
        if tail is not None and not blockers:
            engine.schedule(timer, (tail if tail > engine.now_ns else engine.now_ns) + timer.delay_ns)
            return
        if self.last is not None and not self.last.done:
            blockers.append(self.last)
        if len(blockers) == 1:  # no joining handle for one
            blockers[0].add_callback(timer.after)
        else:
            self._start_after(timer, timer.delay_ns, blockers)

    def _known_tail(self) -> float | None:
        """When the stream's last op ends, if known (it is, once that op is done)."""
        if self._tail_ns is None and self.last is not None and self.last.done:
            self._tail_ns = self.last.time_ns
        return self._tail_ns

    def _start_after(self, op: Handle, duration_ns: float, blockers: list) -> None:
        def ready(_joined):
            end = self.engine.now_ns + duration_ns
            self.engine.schedule(op, end)
            if self.last is op:
                self._tail_ns = end

        if len(blockers) == 1:  # no joining handle for one
            blockers[0].add_callback(ready)
        else:
            all_of(self.engine, blockers, ("blockers of {}", op)).add_callback(ready)

    def wait_for(self, handle: Handle, desc, ordered: bool = False) -> None:
        """Ops enqueued from now on start after ``handle`` (``cudaStreamWaitEvent``). If the
        stream has no op of its own pending, or ``ordered`` (the caller knows ``handle``
        completes after the stream's last op), the stream just takes ``handle`` as its last
        op (no event); else a zero-time op joins the two."""
        if handle.done:
            return
        last = self.last
        if ordered or last is None or last.done or last is handle:
            self.last = handle
            self._tail_ns = None
        else:
            self.enqueue(0.0, desc, deps=(handle,))

    def follow(self, handle: Handle) -> None:
        """``wait_for(handle, ..., ordered=True)`` without a description: the caller knows
        ``handle`` completes after the stream's last op, so the stream takes it as its last."""
        if not handle.done:
            self.last = handle
            self._tail_ns = None

    def abandon(self) -> None:
        """Forget the ops that can never complete (their spawn ended): ops enqueued from now
        on do not wait for them."""
        if self.last is not None and not self.last.done:
            self.last = None
            self._tail_ns = self.engine.now_ns


class _Start(Handle):
    """When a work op (``Stream.enqueue_work``) starts: ``delay_ns`` after its blockers."""

    __slots__ = ("stream", "op", "start", "delay_ns")

    __init__ = object.__init__  # made by ``_new_start``: no ``__init__`` frame per work op

    @property
    def desc(self) -> str:
        return f"start of {self.op.desc}"

    def after(self, _blocker) -> None:
        engine = self.stream.engine
        engine.schedule(self, engine.now_ns + self.delay_ns)

    def finish(self, _work) -> None:
        engine = self.stream.engine
        engine.schedule(self.op, engine.now_ns)


def _new_start(stream, op, start, delay_ns) -> _Start:
    """A ``_Start`` (a module function: a global's load is specialized, a class attribute's
    is not in CPython 3.11)."""
    timer = _Start()
    timer.done = False  # Handle.__init__, inlined: one per work op; the desc is made when read
    timer.time_ns = timer._desc = timer.waiters = None
    timer.callbacks = [_begin]
    timer.stream, timer.op, timer.start, timer.delay_ns = stream, op, start, delay_ns
    return timer


def _begin(timer: _Start) -> None:
    """The timer's callback (one function for every op, no closure per op): start the work;
    the op completes with it."""
    work = timer.start()
    stream = timer.stream
    if stream.trace is not None:
        stream.trace.stream_work(stream, timer.op, work, timer.delay_ns)
    if work is timer.op:
        return  # the op is its own work (``enqueue_work``'s ``op``)
    if work.done:
        timer.finish(work)
    else:
        work.add_callback(timer.finish)
