"""The runtime's devices: one ``SimDevice`` per topology device, each made on its first use
(docs/adr/0036-spawn-and-setup-at-scale.md).

A context over a topology of N devices used to make N SimDevices (and their default streams)
before any rank ran: two objects a device for the collector to walk while the spawn's tasks
are made, and the whole cost for devices no rank touches. ``Devices`` is the read-only
sequence the port exposes as ``Runtime.devices``: ``len`` is the topology's device count,
``devices[i]`` makes device ``i`` on first read and returns that same object ever after;
iterating makes every device (who iterates wants them all). ``made()`` lists only the devices
made so far (a device never made has no streams, so nothing to settle).

A device is made by index, whoever reads it first, so its state never depends on when it was
made: a SimDevice holds nothing until ops are enqueued on it (C9).
"""

from __future__ import annotations

from collections.abc import Sequence

from coopsim.engine import SimDevice


class Devices(Sequence):
    __slots__ = ("_engine", "_topology", "by_index")

    def __init__(self, engine, topology):
        self._engine = engine
        self._topology = topology
        # device index -> its SimDevice, or None until read: a hot path may index this list
        # (a C call) and fall back to ``devices[i]`` on None; never written outside this class
        self.by_index: list = [None] * len(topology.devices)

    def __len__(self) -> int:
        return len(self.by_index)

    def __getitem__(self, i):
        if i.__class__ is slice:
            return [self[j] for j in range(*i.indices(len(self.by_index)))]
        device = self.by_index[i]  # IndexError and negative indices as a list's
        if device is None:
            i = i if i >= 0 else i + len(self.by_index)
            device = self.by_index[i] = SimDevice(self._engine, self._topology.devices[i], self._topology.name)
        return device

    def __iter__(self):
        for i in range(len(self.by_index)):
            yield self[i]

    def made(self) -> list[SimDevice]:
        """The devices made so far, by index."""
        return [d for d in self.by_index if d is not None]
