"""Megatron-style tensor parallelism on coopsim: ``parallel_state`` (the groups),
``mappings`` (the region mappings, forward and backward) and ``layers`` (column, row,
vocabulary-parallel embedding, MLP; forward and explicit backward). See
docs/adr/0021-tensor-parallel-layers.md."""

from coopsim.tp import layers, mappings, parallel_state

__all__ = ["layers", "mappings", "parallel_state"]
