"""Where a model's weights live when accelerate spreads it over devices (``device_map``).

A module accelerate offloads (to the CPU or to disk) keeps its parameters on ``meta``; the real
values are in its hook's ``weights_map`` (CPU memory, or files read on each forward) and are put
in place only for the module's own forward. Edits read and replace those values here, never the
files behind them (docs/models.md, "Models larger than one device").
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.offload import hooks, offload_home


@dataclass
class OffloadSlot:
    """One offloaded parameter: the hook's map its forward reads (``weights_map[name]``), the
    in-memory overlay that answers that read first (``store[key]``) and the device its module
    runs on."""

    weights_map: Any
    name: str
    store: MutableMapping[str, torch.Tensor]  # what is put here wins over the files
    key: str
    device: torch.device

    def get(self) -> torch.Tensor:
        """The value the next forward will use."""
        return self.weights_map[self.name]


def _overlay(weights_map: Any, key: str) -> tuple[MutableMapping[str, torch.Tensor], str] | None:
    """The in-memory mapping that answers ``weights_map[key]`` first: a PrefixedDataset adds its
    prefix; an OffloadedWeightsLoader answers from its ``state_dict`` before its files; a dict
    (CPU offload) is itself. None for a mapping of another kind."""
    while hasattr(weights_map, "prefix") and hasattr(weights_map, "dataset"):
        key = weights_map.prefix + key
        weights_map = weights_map.dataset
    if hasattr(weights_map, "index") and isinstance(getattr(weights_map, "state_dict", None), dict):
        return weights_map.state_dict, key
    if isinstance(weights_map, MutableMapping):
        return weights_map, key
    return None


def offload_slot(model: nn.Module, name: str) -> OffloadSlot | None:
    """Where the value of parameter ``name`` lives when accelerate offloaded its module; None
    when the parameter holds its value itself (on whichever device)."""
    home = offload_home(model, name)
    if home is None:
        return None
    hook, rel = home
    found = _overlay(hook.weights_map, rel)
    if found is None:
        return None
    return OffloadSlot(hook.weights_map, rel, found[0], found[1], _device(hook.execution_device))


def _device(dev: int | str | torch.device | None) -> torch.device:
    """accelerate names a GPU by its number; None: the CPU."""
    if dev is None:
        return torch.device("cpu")
    return torch.device(f"cuda:{dev}" if isinstance(dev, int) else dev)


def parameter(model: nn.Module, name: str) -> torch.Tensor:
    """Parameter ``name`` as its module holds it now (accelerate replaces the Parameter object
    of an offloaded module on every forward: never keep one)."""
    return model.get_parameter(name)


def execution_device(module: nn.Module) -> torch.device:
    """The device ``module``'s forward runs on: its accelerate hook's, else its first real
    parameter's (CPU for a module without one)."""
    for hook in hooks(module):
        if getattr(hook, "execution_device", None) is not None:
            return _device(hook.execution_device)
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")
