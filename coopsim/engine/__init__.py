"""Virtual clock, event heap and handles; resources (streams, links) plug in here."""

from coopsim.engine.core import Engine, Event, Handle

__all__ = ["Engine", "Event", "Handle"]
