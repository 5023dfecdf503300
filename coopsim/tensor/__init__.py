"""Device tensors (``tensor``), what their ops compute and cost (``ops``), and the
``torch.cuda``-shaped namespace of devices, streams and events (``cuda``)."""

from coopsim.tensor.api import TensorAPI
from coopsim.tensor.tensor import Device, Tensor, device_index

__all__ = ["Device", "Tensor", "TensorAPI", "device_index"]
