"""The same worker on real PyTorch: ``launch``, ``crosscheck``, ``to_host`` and torchrun.

Importing this package does not import torch; only ``backend="torch"`` does (and says which
extra to install when torch is missing). See docs/adr/0014-pytorch-bridge.md.
"""

from coopsim.bridge.checker import CrosscheckError, Difference, compare, crosscheck
from coopsim.bridge.host import HostTensor, to_host
from coopsim.bridge.launcher import launch
from coopsim.bridge.processes import LaunchTimeout

__all__ = ["CrosscheckError", "Difference", "HostTensor", "LaunchTimeout", "compare", "crosscheck",
           "launch", "to_host"]
