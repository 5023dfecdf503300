"""Virtual clock, event heap and handles; resources (streams, devices, links) plug in here."""

from coopsim.engine.core import Engine, Event, Handle, all_of
from coopsim.engine.device import OutOfMemoryError, SimDevice
from coopsim.engine.network import Network, Transfer
from coopsim.engine.stream import Stream

__all__ = ["Engine", "Event", "Handle", "all_of", "Network", "OutOfMemoryError", "SimDevice", "Stream", "Transfer"]
