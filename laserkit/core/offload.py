"""Find the value of a tensor accelerate offloaded: its module's parameter is on ``meta``, the
value in the hook's ``weights_map`` (CPU memory or files). Plain attribute reads, no import of
accelerate, so that anything holding a model (fingerprints, edits, caches) can see through it
(docs/models.md, "Models larger than one device")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def hooks(module: Any) -> Iterator[Any]:
    """accelerate's hooks on ``module`` (a SequentialHook holds several)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return
    yield from getattr(hook, "hooks", (hook,))


def offload_home(model: Any, name: str) -> tuple[Any, str] | None:
    """The offloading hook that holds tensor ``name`` and its key in the hook's weights_map:
    the tensor's own module first, then its parents. None: not offloaded."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        module = model.get_submodule(".".join(parts[:cut]))
        for hook in hooks(module):
            if getattr(hook, "offload", False) and getattr(hook, "weights_map", None) is not None:
                return hook, ".".join(parts[cut:])
    return None


def real_value(model: Any, name: str, tensor: Any) -> Any:
    """``tensor`` (model's ``name``), or for a meta tensor of an offloaded module the value its
    next forward will use."""
    if getattr(tensor, "device", None) is None or tensor.device.type != "meta":
        return tensor
    home = offload_home(model, name)
    return tensor if home is None else home[0].weights_map[home[1]]
