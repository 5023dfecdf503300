"""Random numbers (docs/adr/0016-torch-surface.md).

Each process (rank; main) has its own generators, one for the CPU and one per device, on
its ``ProcessState`` (never a module global). A generator's stream is numpy's PCG64 seeded
with ``(RuntimeContext seed, manual seed)``: deterministic (C9), the same on every rank
that sets the same manual seed (so data-parallel replicas initialised after
``manual_seed(s)`` start identical, as in PyTorch), and independent of other ranks' draws.
The values are not PyTorch's (Philox) numbers.

Values are drawn on the host when the op is issued (program order fixes them), then
written by a device op costing the bytes written (no flops).
"""

from __future__ import annotations

import numpy as np

from coopsim.tensor.kernel import run
from coopsim.tensor.state import process_state

DEFAULT_SEED = 67280421310721  # torch's default_generator.initial_seed()
DEVICE_SIDE = ("uniform_", "normal_", "random_", "bernoulli_")


class Generator:
    """``torch.Generator``: ``manual_seed``, ``seed``, ``initial_seed``, ``get_state``,
    ``set_state``. ``rt`` is the runtime port (its ``seed`` is the context's)."""

    def __init__(self, rt, device="cpu", seed: int = DEFAULT_SEED):
        self._rt = rt
        self.device = device
        self.manual_seed(seed)

    def manual_seed(self, seed) -> "Generator":
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"manual_seed expected an int, got {seed!r}")
        self._seed = int(seed) & 0xFFFF_FFFF_FFFF_FFFF  # torch keeps it as uint64
        self._numpy = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [self._rt.seed & 0xFFFF_FFFF_FFFF_FFFF, self._seed])))
        return self

    def seed(self) -> int:
        """A new seed drawn from this generator's own stream (deterministic, C9)."""
        new = int(self._numpy.integers(0, 2**63))
        self.manual_seed(new)
        return new

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self):
        return (self._seed, self._numpy.bit_generator.state)

    def set_state(self, state) -> "Generator":
        self._seed = state[0]
        self._numpy.bit_generator.state = state[1]
        return self

    @property
    def numpy(self) -> np.random.Generator:
        return self._numpy


def generator_for(rt, device_index, generator=None) -> Generator:
    """``generator`` if given, else the caller's default generator of the device (None: CPU)."""
    if generator is not None:
        if not isinstance(generator, Generator):
            raise TypeError(f"generator must be a ctx.Generator, got {type(generator).__name__}")
        return generator
    gens = process_state(rt).generators
    g = gens.get(device_index)
    if g is None:
        g = gens[device_index] = Generator(rt, "cpu" if device_index is None else f"cuda:{device_index}")
    return g


def manual_seed_all(rt, seed, cpu: bool, cuda: bool) -> None:
    """Seed the caller's CPU generator and/or every device's generator."""
    keys = ([None] if cpu else []) + (list(range(len(rt.devices))) if cuda else [])
    for k in keys:
        generator_for(rt, k).manual_seed(seed)


def sample(gen: Generator, kind: str, shape: tuple, np_dtype, low=0.0, high=1.0):
    """Host values: "uniform" in [low, high), "normal" (mean low, std high), "integers" in [low, high)."""
    g = gen.numpy
    if kind == "uniform":
        return (g.random(shape, dtype=np.float64) * (high - low) + low).astype(np_dtype)
    if kind == "normal":
        return (g.standard_normal(shape, dtype=np.float64) * high + low).astype(np_dtype)
    return g.integers(low, high, size=shape, dtype=np.int64).astype(np_dtype)


class RandomMethods:
    """The in-place random Tensor methods."""

    __slots__ = ()

    def _fill_random(self, what, kind, low, high, generator):
        if not self._dtype.is_floating_point and kind != "integers":
            raise RuntimeError(f"{what} expects a floating point tensor, got {self._dtype}")
        gen = generator_for(self._storage.rt, self._storage.device.index, generator)
        values = sample(gen, kind, self._array.shape, self._dtype._np, low, high)
        run(what, [self], [self], lambda a: values, 0, cost_bytes=self._array.size * self._dtype.itemsize)
        return self

    def uniform_(self, from_=0.0, to=1.0, *, generator=None):
        return self._fill_random("uniform_", "uniform", from_, to, generator)

    def normal_(self, mean=0.0, std=1.0, *, generator=None):
        return self._fill_random("normal_", "normal", mean, std, generator)

    def random_(self, from_=0, to=None, *, generator=None):
        if to is None:
            from_, to = 0, from_ if from_ else 2**24
        return self._fill_random("random_", "integers", from_, to, generator)

    def bernoulli_(self, p=0.5, *, generator=None):
        gen = generator_for(self._storage.rt, self._storage.device.index, generator)
        values = gen.numpy.random(self._array.shape) < p
        run("bernoulli_", [self], [self], lambda a: values, 0,
            cost_bytes=self._array.size * self._dtype.itemsize)
        return self

