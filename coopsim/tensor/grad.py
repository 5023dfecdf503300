"""No autograd (docs/adr/0016-torch-surface.md): the names exist so that forward code and
inference loops run, but coopsim computes no gradients.

``requires_grad`` is accepted and recorded; ``backward`` raises ``NotImplementedError``;
``no_grad``, ``enable_grad``, ``inference_mode`` and ``set_grad_enabled`` are context
managers (and decorators) that only record the mode on the caller's process state.
"""

from __future__ import annotations

import functools

from coopsim.tensor.state import process_state

DEVICE_SIDE = ("requires_grad", "requires_grad_", "grad", "grad_fn", "is_leaf", "backward", "detach",
               "detach_", "data")

NO_AUTOGRAD = ("coopsim has no autograd: it simulates the forward computation and the "
               "communication, not gradients; compute gradients explicitly (as tensors) in "
               "the worker, or run the worker on real PyTorch (see docs/torch-surface.md)")


class GradMode:
    """``torch.no_grad()`` & co: sets the caller's grad mode to ``enabled`` for the block."""

    def __init__(self, rt, enabled: bool):
        self._rt = rt
        self._enabled = bool(enabled)
        self._saved = []
        process_state(rt)  # fail early outside a context's threads, as other calls do

    def __enter__(self):
        state = process_state(self._rt)
        self._saved.append(state.grad_enabled)
        state.grad_enabled = self._enabled
        return None

    def __exit__(self, *exc):
        process_state(self._rt).grad_enabled = self._saved.pop()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with self:
                return fn(*args, **kwargs)
        return wrapped


class GradMethods:
    """The autograd-shaped Tensor names. ``_requires_grad`` is a slot of Tensor."""

    __slots__ = ()

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value) -> None:
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad: bool = True):
        self._requires_grad = bool(requires_grad)
        return self

    @property
    def grad(self):
        """Always None: nothing computes gradients."""
        return None

    @property
    def grad_fn(self):
        return None

    @property
    def is_leaf(self) -> bool:
        return True

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        raise NotImplementedError(NO_AUTOGRAD)

    def detach(self):
        """A view of the same storage that does not require grad."""
        return self._view_of(self._array)

    def detach_(self):
        self._requires_grad = False
        return self

    @property
    def data(self):
        return self.detach()
