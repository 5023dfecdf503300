"""``ctx.multiprocessing.SimpleQueue`` / ``Queue``: enough to collect results from ranks.

Items are pickled on ``put`` and unpickled on ``get``, as between real processes (so a rank
cannot hand another a live object). A rank's ``get`` on an empty queue blocks that rank only
(``Runtime.wait`` on a handle that the next ``put`` completes); main's blocking ``get`` on an
empty queue while no spawn runs would block forever, so it raises instead.
"""

from __future__ import annotations

import pickle
import queue as _queue
from collections import deque

from coopsim.engine import Handle


class SimpleQueue:
    """``multiprocessing.SimpleQueue``."""

    def __init__(self, rt):
        self._rt = rt  # the runtime port
        self._items: deque = deque()
        self._arrival: Handle | None = None  # completes at the next put, while a rank waits
        self._closed = False

    def put(self, obj) -> None:
        if self._closed:
            raise ValueError("Queue is closed")
        self._items.append(pickle.dumps(obj))
        arrival, self._arrival = self._arrival, None
        if arrival is not None:
            self._rt.engine.schedule(arrival, self._rt.engine.now_ns)

    def get(self):
        return self._get(True, None)

    def empty(self) -> bool:
        return not self._items

    def close(self) -> None:
        self._closed = True

    def _get(self, block: bool, timeout):
        rt = self._rt
        while not self._items:
            if not block or rt.current_task() is None:
                if block and timeout is None:
                    raise RuntimeError("get() on an empty queue from main would block forever: no "
                                       "rank is running to put into it (join the processes first)")
                raise _queue.Empty
            if self._arrival is None:
                self._arrival = Handle("an item put into a multiprocessing queue")
            rt.wait(self._arrival)
        return pickle.loads(self._items.popleft())


class Queue(SimpleQueue):
    """``multiprocessing.Queue`` (unbounded: ``maxsize`` is accepted, puts never block)."""

    def __init__(self, rt, maxsize: int = 0):
        super().__init__(rt)
        self._maxsize = maxsize

    def put(self, obj, block: bool = True, timeout=None) -> None:
        super().put(obj)

    def get(self, block: bool = True, timeout=None):
        return self._get(block, timeout)

    def put_nowait(self, obj) -> None:
        self.put(obj, False)

    def get_nowait(self):
        return self._get(False, None)

    def qsize(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return 0 < self._maxsize <= len(self._items)

    def join_thread(self) -> None:
        pass

    def cancel_join_thread(self) -> None:
        pass
