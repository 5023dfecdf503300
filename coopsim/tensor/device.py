"""``torch.device`` and the resolution of a ``device=`` argument to a place for tensors."""

from __future__ import annotations

from coopsim.tensor.host import host_device


class Device:
    """``torch.device``: ``type`` ("cuda"; "cpu" can be named but holds no tensors) and
    ``index`` (None: the caller's current device). Immutable."""

    __slots__ = ("type", "index")

    def __init__(self, type, index=None):
        if isinstance(type, Device):
            type, index = type.type, type.index
        elif isinstance(type, int) and not isinstance(type, bool):
            type, index = "cuda", type
        elif isinstance(type, str) and ":" in type:
            if index is not None:
                raise RuntimeError(f"type (string) must not include an index because index was "
                                   f"passed explicitly: {type}")
            type, _, text = type.partition(":")
            if not text.isdigit():
                raise RuntimeError(f"Invalid device string: '{type}:{text}'")
            index = int(text)
        if type not in ("cuda", "cpu"):
            raise RuntimeError(f"Expected one of cpu, cuda device type at start of device string: {type}")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
            raise RuntimeError(f"Device index must not be negative or a non-int, got {index!r}")
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "index", index)

    def __setattr__(self, name, value):
        raise AttributeError("torch.device is immutable")

    def __eq__(self, other) -> bool:
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"


def device_index(rt, device, what: str) -> int:
    """The index of the device that ``device`` names (None, "cuda", "cuda:i", i, a Device) for
    the caller; raises if it is not a device of the runtime ``rt``'s topology."""
    if device is None:
        return rt.current_device().index
    if not isinstance(device, (Device, str, int)) or isinstance(device, bool):
        raise TypeError(f"{what}: device must be a torch-style device ('cuda', 'cuda:1', 1 or "
                        f"ctx.device(...)), got {device!r}")
    device = Device(device)
    if device.type != "cuda":
        raise RuntimeError(f"{what}: coopsim tensors live in accelerator memory; device "
                           f"'{device}' holds none (use 'cuda' or 'cuda:<i>', or omit device=)")
    if device.index is None:
        return rt.current_device().index
    count = len(rt.devices)
    if device.index >= count:
        raise RuntimeError(f"{what}: device cuda:{device.index} does not exist: topology "
                           f"{rt.topology.name!r} has {count} devices (cuda:0 to cuda:{count - 1})")
    return device.index


def device_of(rt, device, what: str):
    """The place ``device`` names for a new tensor: the host for "cpu", else a SimDevice."""
    if device is None:  # the usual call: the caller's current device
        return rt.current_device()
    if not isinstance(device, bool) and isinstance(device, (Device, str)) and Device(device).type == "cpu":
        return host_device(rt)
    return rt.devices[device_index(rt, device, what)]
