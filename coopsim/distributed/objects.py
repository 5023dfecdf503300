"""The object collectives of ``torch.distributed``: pickled objects over tensor collectives.

As in ``torch/distributed/distributed_c10d.py`` (``broadcast_object_list``,
``all_gather_object``, ``gather_object``, ``scatter_object_list``): each object is pickled into
a byte tensor, the sizes travel first, then the (padded) bytes, so the simulated cost is that
of the pickled size. Bytes travel as int32 words (coopsim has no uint8 dtype): a payload costs
its size rounded up to 4 bytes. These calls block the calling rank (they read the results),
as in PyTorch.
"""

from __future__ import annotations

import pickle

import numpy as np

from coopsim.tensor import TensorAPI


class ObjectCollectives:
    """Object collectives over a ``Distributed`` facade ``dist``."""

    def __init__(self, dist, rt):
        self._dist = dist
        self._tensors = TensorAPI(rt)

    def _words(self, payload: bytes, words: int):
        data = np.zeros(words * 4, dtype=np.uint8)
        data[:len(payload)] = np.frombuffer(payload, dtype=np.uint8)
        return self._tensors.from_numpy(data.view(np.int32))

    @staticmethod
    def _load(tensor, nbytes: int):
        return pickle.loads(tensor.numpy().tobytes()[:nbytes])

    def _sizes(self, nbytes: int, group) -> list[int]:
        """Every member's byte count (an all_gather of one int64 each)."""
        dist = self._dist
        n = dist.get_world_size(group)
        sizes = [self._tensors.zeros(1, dtype=self._tensors.int64) for _ in range(n)]
        dist.all_gather(sizes, self._tensors.tensor([nbytes], dtype=self._tensors.int64), group=group)
        return [int(s.item()) for s in sizes]

    def _member_and_root(self, group, root, group_root) -> tuple[int, int]:
        """The caller's group rank (-1 outside ``group``) and the root's group rank."""
        dist = self._dist
        member = dist.get_rank(group)
        if member < 0 or group_root is not None:
            return member, group_root
        return member, root if group is None else dist.get_group_rank(group, root)

    def all_gather_object(self, object_list, obj, group=None) -> None:
        dist = self._dist
        if dist.get_rank(group) < 0:
            return
        payload = pickle.dumps(obj)
        sizes = self._sizes(len(payload), group)
        words = -(-max(sizes) // 4)
        outputs = [self._tensors.zeros(words, dtype=self._tensors.int32) for _ in sizes]
        dist.all_gather(outputs, self._words(payload, words), group=group)
        for i, (t, n) in enumerate(zip(outputs, sizes)):
            object_list[i] = self._load(t, n)

    def gather_object(self, obj, object_gather_list=None, dst=None, group=None, group_dst=None) -> None:
        dist = self._dist
        member, root = self._member_and_root(group, dst, group_dst)
        if member < 0:
            return
        payload = pickle.dumps(obj)
        sizes = self._sizes(len(payload), group)
        words = -(-max(sizes) // 4)
        is_root = member == root
        if is_root and (object_gather_list is None or len(object_gather_list) < len(sizes)):
            raise ValueError("Argument ``object_gather_list`` must be a list of the group's size "
                             "on the destination rank.")
        outputs = [self._tensors.zeros(words, dtype=self._tensors.int32) for _ in sizes] if is_root else None
        dist.gather(self._words(payload, words), outputs, dst=dst, group=group, group_dst=group_dst)
        if is_root:
            for i, (t, n) in enumerate(zip(outputs, sizes)):
                object_gather_list[i] = self._load(t, n)

    def broadcast_object_list(self, object_list, src=None, group=None, device=None, group_src=None) -> None:
        dist = self._dist
        member, root = self._member_and_root(group, src, group_src)
        if member < 0:
            return
        int64 = self._tensors.int64
        if member == root:
            payloads = [pickle.dumps(o) for o in object_list]
            sizes = self._tensors.tensor([len(p) for p in payloads], dtype=int64)
        else:
            sizes = self._tensors.zeros(len(object_list), dtype=int64)
        dist.broadcast(sizes, src=src, group=group, group_src=group_src)
        counts = [int(n) for n in sizes.tolist()]
        words = -(-sum(counts) // 4)
        blob = b"".join(payloads) if member == root else b""
        data = self._words(blob, words)
        dist.broadcast(data, src=src, group=group, group_src=group_src)
        if member != root:
            raw = data.numpy().tobytes()
            offset = 0
            for i, n in enumerate(counts):
                object_list[i] = pickle.loads(raw[offset:offset + n])
                offset += n

    def scatter_object_list(self, scatter_object_output_list, scatter_object_input_list=None,
                            src=None, group=None, group_src=None) -> None:
        dist = self._dist
        if not isinstance(scatter_object_output_list, list) or len(scatter_object_output_list) < 1:
            raise ValueError("Expected argument scatter_object_output_list to be a list of size at least 1.")
        member, root = self._member_and_root(group, src, group_src)
        if member < 0:
            return
        int64 = self._tensors.int64
        n = dist.get_world_size(group)
        payloads = [pickle.dumps(o) for o in scatter_object_input_list] if member == root else []
        if member == root and len(payloads) != n:
            raise ValueError(f"scatter_object_list: scatter_object_input_list must have {n} objects")
        longest = self._tensors.tensor([max(len(p) for p in payloads) if payloads else 0], dtype=int64)
        dist.broadcast(longest, src=src, group=group, group_src=group_src)
        words = -(-int(longest.item()) // 4)
        inputs = [self._words(p, words) for p in payloads] if member == root else None
        sizes_in = [self._tensors.tensor([len(p)], dtype=int64) for p in payloads] if member == root else None
        out, size = self._tensors.zeros(words, dtype=self._tensors.int32), self._tensors.zeros(1, dtype=int64)
        dist.scatter(out, inputs, src=src, group=group, group_src=group_src)
        dist.scatter(size, sizes_in, src=src, group=group, group_src=group_src)
        scatter_object_output_list[0] = self._load(out, int(size.item()))
