"""Megatron's tensor-parallel layers (``megatron/core/tensor_parallel/layers.py``), with an
explicit backward.

coopsim has no autograd: each layer's ``forward(x)`` keeps what its backward needs, and
``backward(grad_output)`` returns the gradient of its input and accumulates ``weight.grad``
and ``bias.grad`` (summing into an existing ``grad``, as autograd does). Each direction issues
exactly the collectives Megatron issues, on the caller's tensor model parallel group, in
Megatron's order (docs/adr/0021-tensor-parallel-layers.md):

- ``ColumnParallelLinear`` (weight split along the output dim). Forward: all_gather of the
  input along dim 0 if ``sequence_parallel``; all_gather along the last dim if
  ``gather_output``. Backward: the split of ``gather_output``; with ``sequence_parallel`` an
  all_gather of the saved input (Megatron re-gathers instead of keeping it), then the input
  gradient reduce-scattered along dim 0; without, the input gradient all-reduced.
- ``RowParallelLinear`` (weight split along the input dim). Forward: the split of the input
  if not ``input_is_parallel``; the output reduce-scattered along dim 0 if
  ``sequence_parallel``, else all-reduced; the bias added after. Backward: all_gather of the
  gradient along dim 0 if ``sequence_parallel``; the gather of a split input.
- ``VocabParallelEmbedding`` (rows split by vocabulary range): all_reduce of the masked
  lookups (reduce_scatter along the sequence if ``reduce_scatter_embeddings``).
- ``ParallelMLP``: column (no gather) -> fused bias-GeLU -> row.

Shapes are Megatron's: the first dim is the sequence (``[s, b, h]``), which sequence
parallelism splits. ``forward`` returns ``(output, output_bias)`` as Megatron's layers do
(``output_bias`` is the bias when ``skip_bias_add``, else None). With sequence parallelism a
row layer's ``bias.grad`` is this rank's partial sum over its sequence chunk: Megatron sums
those across the group later, when it finalizes the gradients, not in the layer.

Weights come from one master weight per layer, drawn from a numpy generator seeded with
``seed`` on every rank and split per rank as Megatron's CPU initialisation does, so every
tensor parallel size computes the same function. Timing-only contexts draw no master weight.
"""

from __future__ import annotations

import numpy as np

from coopsim.tensor import Tensor
from coopsim.tensor.ops import timing_only
from coopsim.tp import functional as F
from coopsim.tp import mappings as m
from coopsim.tp import parallel_state as ps


class Parameter(Tensor):
    """A layer's weight or bias (``torch.nn.Parameter``): a tensor with a ``grad`` slot.
    Ops on a parameter, views included, make plain tensors."""

    __slots__ = ("grad",)

    @classmethod
    def _make(cls, array, storage, dtype):
        return Tensor._make(array, storage, dtype)

    @staticmethod
    def of(t: Tensor) -> "Parameter":
        p = object.__new__(Parameter)
        p._array, p._storage, p._dtype = t._array, t._storage, t._dtype
        p.grad = None
        return p

    def accumulate(self, grad: Tensor) -> None:
        """``grad`` into ``self.grad`` (kept if there is none yet, else summed in place)."""
        if self.grad is None:
            self.grad = grad
        else:
            self.grad.add_(grad)


def init_method_normal(sigma: float = 0.02):
    """Megatron's ``init_method_normal``: ``init(rng, shape)`` draws N(0, sigma^2), float32."""
    def init(rng, shape):
        return rng.normal(0.0, sigma, shape).astype(np.float32)
    return init


def _sharded_weight(ctx, shape, dim, init, seed, dtype, keep_master):
    """This rank's chunk (along ``dim``) of the master weight of ``shape``; and the master
    weight itself if ``keep_master`` (None otherwise)."""
    world, rank = ps.get_tensor_model_parallel_world_size(ctx), ps.get_tensor_model_parallel_rank(ctx)
    part = list(shape)
    part[dim] = m.divide(shape[dim], world, "the partitioned dim")
    if ctx.timing_only:
        return Parameter.of(ctx.zeros(tuple(part), dtype=dtype)), None
    master = init(np.random.default_rng(seed), tuple(shape))
    index = [slice(None)] * len(shape)
    index[dim] = slice(rank * part[dim], (rank + 1) * part[dim])
    shard = np.ascontiguousarray(master[tuple(index)])
    return Parameter.of(ctx.tensor(shard, dtype=dtype)), (master if keep_master else None)


def _flat2(t: Tensor) -> Tensor:
    """``t`` as a matrix of rows: ``[s, b, h] -> [s * b, h]``."""
    return t.reshape(-1, t.shape[-1])


class _Linear:
    """What the two linear layers share: parameters and the weight-gradient step."""

    def _params(self, ctx, shape, dim, bias_size, bias, init_method, seed, params_dtype, keep):
        dtype = ctx.float32 if params_dtype is None else params_dtype
        self.ctx = ctx
        self.weight, self.master_weight = _sharded_weight(
            ctx, shape, dim, init_method or init_method_normal(), seed, dtype, keep)
        self.bias = Parameter.of(ctx.zeros(bias_size, dtype=dtype)) if bias else None
        self._input = None

    def _weight_grads(self, grad_rows, input_rows, bias_grad_rows) -> None:
        self.weight.accumulate(grad_rows.t().matmul(input_rows))
        if self.bias is not None:
            self.bias.accumulate(bias_grad_rows.sum(0))


class ColumnParallelLinear(_Linear):
    """Y = X A^T + b with A split along its rows (the output dim) over the TP group."""

    def __init__(self, ctx, input_size: int, output_size: int, *, bias: bool = True,
                 gather_output: bool = False, init_method=None, skip_bias_add: bool = False,
                 sequence_parallel: bool = False, params_dtype=None, seed: int = 0,
                 keep_master_weight_for_test: bool = False):
        world = ps.get_tensor_model_parallel_world_size(ctx)
        if gather_output and sequence_parallel and world > 1:
            raise ValueError("ColumnParallelLinear: gather_output and sequence_parallel cannot "
                             "be used together (as in Megatron)")
        self.input_size, self.output_size = input_size, output_size
        self.output_size_per_partition = m.divide(output_size, world, "output_size")
        self.gather_output, self.skip_bias_add = gather_output, skip_bias_add
        self.sequence_parallel = sequence_parallel and world > 1
        self._params(ctx, (output_size, input_size), 0, self.output_size_per_partition, bias,
                     init_method, seed, params_dtype, keep_master_weight_for_test)

    def forward(self, x):
        ctx = self.ctx
        self._input = x
        total = m.all_gather_first_dim(ctx, x) if self.sequence_parallel else x
        out = total.matmul(self.weight.t())
        if self.bias is not None and not self.skip_bias_add:
            out.add_(self.bias)
        if self.gather_output:
            out = m.gather_from_tensor_model_parallel_region(ctx, out)
        return out, (self.bias if self.skip_bias_add else None)

    def backward(self, grad_output):
        ctx, x = self.ctx, self._input
        if self.gather_output:
            grad_output = m.gather_from_tensor_model_parallel_region.backward(ctx, grad_output)
        gather = None
        total = x
        if self.sequence_parallel:
            total, gather = m.all_gather_first_dim(ctx, x, async_op=True)
        grad_input = grad_output.matmul(self.weight)
        if gather is not None:
            gather.wait()
        reduce = None
        if self.sequence_parallel:
            grad_input, reduce = m.reduce_scatter_first_dim(ctx, grad_input, async_op=True)
        elif ps.get_tensor_model_parallel_world_size(ctx) > 1:
            grad_input, reduce = m.all_reduce(ctx, grad_input, async_op=True)
        rows = _flat2(grad_output)
        self._weight_grads(rows, _flat2(total), rows)
        if reduce is not None:
            reduce.wait()
        return grad_input


class RowParallelLinear(_Linear):
    """Y = X A^T + b with A split along its columns (the input dim) over the TP group; the
    bias is whole and added once, after the reduction."""

    def __init__(self, ctx, input_size: int, output_size: int, *, bias: bool = True,
                 input_is_parallel: bool = True, init_method=None, skip_bias_add: bool = False,
                 sequence_parallel: bool = False, params_dtype=None, seed: int = 0,
                 keep_master_weight_for_test: bool = False):
        world = ps.get_tensor_model_parallel_world_size(ctx)
        if sequence_parallel and not input_is_parallel and world > 1:
            raise ValueError("RowParallelLinear: to use sequence_parallel, input_is_parallel "
                             "must be True (as in Megatron)")
        self.input_size, self.output_size = input_size, output_size
        self.input_size_per_partition = m.divide(input_size, world, "input_size")
        self.input_is_parallel, self.skip_bias_add = input_is_parallel, skip_bias_add
        self.sequence_parallel = sequence_parallel and world > 1
        self._params(ctx, (output_size, input_size), 1, output_size, bias, init_method, seed,
                     params_dtype, keep_master_weight_for_test)

    def forward(self, x):
        ctx = self.ctx
        if not self.input_is_parallel:
            x = m.scatter_to_tensor_model_parallel_region(ctx, x)
        self._input = x
        partial = x.matmul(self.weight.t())
        if self.sequence_parallel:
            out = m.reduce_scatter_to_sequence_parallel_region(ctx, partial)
        else:
            out = m.reduce_from_tensor_model_parallel_region(ctx, partial)
        if self.bias is not None and not self.skip_bias_add:
            out = out + self.bias
        return out, (self.bias if self.skip_bias_add else None)

    def backward(self, grad_output):
        ctx, x = self.ctx, self._input
        if self.sequence_parallel:
            grad = m.reduce_scatter_to_sequence_parallel_region.backward(ctx, grad_output)
        else:
            grad = m.reduce_from_tensor_model_parallel_region.backward(ctx, grad_output)
        grad_input = grad.matmul(self.weight)
        self._weight_grads(_flat2(grad), _flat2(x), _flat2(grad_output))
        if not self.input_is_parallel:
            grad_input = m.scatter_to_tensor_model_parallel_region.backward(ctx, grad_input)
        return grad_input


class VocabParallelEmbedding:
    """An embedding table split by vocabulary range over the TP group: each rank looks up
    the ids in its range (zeros elsewhere), then the group sums the lookups."""

    def __init__(self, ctx, num_embeddings: int, embedding_dim: int, *, init_method=None,
                 reduce_scatter_embeddings: bool = False, params_dtype=None, seed: int = 0,
                 keep_master_weight_for_test: bool = False):
        world = ps.get_tensor_model_parallel_world_size(ctx)
        rows = m.divide(num_embeddings, world, "num_embeddings")
        self.ctx = ctx
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.vocab_start_index = ps.get_tensor_model_parallel_rank(ctx) * rows
        self.vocab_end_index = self.vocab_start_index + rows
        self.reduce_scatter_embeddings = reduce_scatter_embeddings
        dtype = ctx.float32 if params_dtype is None else params_dtype
        self.weight, self.master_weight = _sharded_weight(
            ctx, (num_embeddings, embedding_dim), 0, init_method or init_method_normal(), seed,
            dtype, keep_master_weight_for_test)
        self._ids = None

    def forward(self, ids):
        """``ids`` ``[b, s]`` -> ``[b, s, h]`` (``[s / tp, b, h]`` if ``reduce_scatter_embeddings``)."""
        ctx = self.ctx
        self._ids = ids
        out = F.embedding(ctx, ids, self.weight, self.vocab_start_index)
        if self.reduce_scatter_embeddings:
            return m.reduce_scatter_to_sequence_parallel_region(ctx, out.transpose(0, 1).contiguous())
        return m.reduce_from_tensor_model_parallel_region(ctx, out)

    def backward(self, grad_output):
        """Accumulates ``weight.grad``; ids have no gradient (returns None)."""
        ctx = self.ctx
        if self.reduce_scatter_embeddings:
            grad = m.reduce_scatter_to_sequence_parallel_region.backward(ctx, grad_output)
            grad = grad.transpose(0, 1).contiguous()
        else:
            grad = m.reduce_from_tensor_model_parallel_region.backward(ctx, grad_output)
        self.weight.accumulate(F.embedding_weight_grad(ctx, grad, self._ids, self.weight,
                                                       self.vocab_start_index))
        return None


class ParallelMLP:
    """Megatron's MLP: ``dense_h_to_4h`` (column, no gather, bias skipped) -> bias + GeLU
    (fused) -> ``dense_4h_to_h`` (row, input parallel, bias skipped and returned)."""

    def __init__(self, ctx, hidden_size: int, ffn_hidden_size: int, *, bias: bool = True,
                 sequence_parallel: bool = False, init_method=None,
                 output_layer_init_method=None, params_dtype=None, seed: int = 0,
                 keep_master_weight_for_test: bool = False):
        self.ctx = ctx
        common = dict(bias=bias, skip_bias_add=True, sequence_parallel=sequence_parallel,
                      params_dtype=params_dtype, keep_master_weight_for_test=keep_master_weight_for_test)
        self.dense_h_to_4h = ColumnParallelLinear(ctx, hidden_size, ffn_hidden_size, gather_output=False,
                                                  init_method=init_method, seed=seed, **common)
        self.dense_4h_to_h = RowParallelLinear(ctx, ffn_hidden_size, hidden_size, input_is_parallel=True,
                                               init_method=output_layer_init_method, seed=seed + 1, **common)
        self._h = None

    def forward(self, x):
        h, bias = self.dense_h_to_4h.forward(x)
        self._h = h
        return self.dense_4h_to_h.forward(F.bias_gelu(self.ctx, h, bias))

    def backward(self, grad_output):
        grad = self.dense_4h_to_h.backward(grad_output)
        grad = F.bias_gelu_backward(self.ctx, grad, self._h, self.dense_h_to_4h.bias)
        return self.dense_h_to_4h.backward(grad)
