"""Reuse the hidden states entering layer ℓ across every trial that edits only layers ≥ ℓ.

An intervention at layer ℓ cannot change what blocks 0..ℓ-1 compute, so their output (the input
of block ℓ) is recorded on the first pass over each batch and, on later passes over the same
batch, injected into block ℓ while blocks 0..ℓ-1 are swapped for pass-through modules. Batches are
recognised by a hash of input_ids and attention_mask. Only valid for pure forward scoring over
fixed batches (not generation, whose inputs change as tokens are produced).

Past ``budget_bytes`` of cached states, new ones are spilled to ``spill_dir`` when one is given,
otherwise not kept (that batch is recomputed every time): never out of memory because of the cache.

A model spread over devices (``device_map``): the input of block ℓ is kept on the device block ℓ
runs on (its accelerate hook's execution device), and the budget holds per device: each device
may hold ``budget_bytes`` (or its own entry of a dict) of states (docs/models.md).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..eval.scoring import host_batch
from ..model.placement import execution_device
from ..model.targets import find_blocks


class PassThrough(nn.Module):
    """Stands in for a skipped block: returns its hidden-states input in the block's own output
    structure, and forwards attribute reads (e.g. ``attention_type``) to the real block."""

    def __init__(self, block: nn.Module, structure: int | None) -> None:
        super().__init__()
        object.__setattr__(self, "_block", block)  # not a submodule: no parameters duplicated
        self._structure = structure  # None: a tensor; n: a tuple of n items

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_block"), name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        hidden = args[0] if args else kwargs["hidden_states"]
        if self._structure is None:
            return hidden
        return (hidden,) + (None,) * (self._structure - 1)


def batch_key(args: tuple, kwargs: dict) -> str | None:
    """A hash identifying a batch by its token ids and attention mask; None when not token ids."""
    ids = kwargs.get("input_ids", args[0] if args else None)
    if not isinstance(ids, torch.Tensor):
        return None
    mask = kwargs.get("attention_mask")
    host = host_batch()  # the same ids on the host: no copy back from the device
    if host is not None and host[0].shape == ids.shape:
        ids, mask = host
    h = hashlib.sha1()
    for t in (ids, mask):
        if isinstance(t, torch.Tensor):
            h.update(str((tuple(t.shape), t.dtype)).encode())
            h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


class PrefixCache:
    """Inputs of blocks, per (layer, batch); ``with cache.at(layer): score(...)``.

    ``wanted``: the layers trials will ask for. Any pass that runs block j in full records the
    input of every wanted j it passes through that is still valid there (j ≤ the pass's edited
    layer; ``at(None)`` for an unedited model records them all), so one full pass fills the cache
    for a whole grid and every later trial is a hit. Past the budget, layers are evicted
    (those above the current layer first: a grid walks layers downwards), then new states are
    spilled or not kept.
    """

    def __init__(
        self,
        model: nn.Module,
        budget_bytes: int | dict[str, int] = 1 << 30,
        spill_dir: str | Path | None = None,
        wanted: set[int] | None = None,
    ) -> None:
        self.model = model
        self.blocks = find_blocks(model)[1]
        self.budget_bytes = budget_bytes
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self.wanted = set(wanted or ())
        self._spill_tmp: Path | None = None
        self.layer: int | None = None
        self._memory: dict[tuple[int, str], torch.Tensor] = {}
        self._spilled: dict[tuple[int, str], Path] = {}
        self._bytes: dict[str, int] = {}  # per device
        self._devices: dict[int, torch.device] = {}
        self._structure: int | None = None
        self._key: str | None = None
        self._swapped: list[tuple[int, nn.Module]] = []
        self.stats = {"hits": 0, "recorded": 0, "spilled": 0, "not_kept": 0, "evicted": 0}

    def clear(self) -> None:
        """Forget every cached state (call when blocks before the layer were edited)."""
        for layer in {k[0] for k in [*self._memory, *self._spilled]}:
            self._drop(layer)

    def device(self, layer: int) -> torch.device:
        """Where block ``layer`` runs: its input is kept there."""
        if layer not in self._devices:
            self._devices[layer] = execution_device(self.blocks[layer])
        return self._devices[layer]

    def budget(self, device: torch.device) -> int:
        """Bytes of states ``device`` may hold (a dict: by name, ``cuda:1``, or by type)."""
        b = self.budget_bytes
        if isinstance(b, dict):
            return int(b.get(str(device), b.get(device.type, 0)))
        return b

    def held_bytes(self) -> dict[str, int]:
        """Bytes of states held in memory, per device."""
        return {d: n for d, n in self._bytes.items() if n}

    def _drop(self, layer: int) -> None:
        for k in [k for k in self._memory if k[0] == layer]:
            t = self._memory.pop(k)
            d = str(t.device)
            self._bytes[d] -= t.numel() * t.element_size()
        for k in [k for k in self._spilled if k[0] == layer]:
            self._spilled.pop(k).unlink(missing_ok=True)

    def close(self) -> None:
        self.clear()
        if self._spill_tmp is not None:
            shutil.rmtree(self._spill_tmp, ignore_errors=True)

    @contextmanager
    def at(self, layer: int | None) -> Iterator[PrefixCache]:
        """Within this block, forward passes reuse (or record) the input of block ``layer``
        and record the wanted layers below it; ``None``: the model is unedited, only record."""
        self.layer = layer
        record = {j for j in self.wanted if layer is None or j < layer}
        if layer is not None:
            record.add(layer)
        record.discard(0)  # nothing before block 0 to skip
        hooks = [
            self.model.register_forward_pre_hook(self._top_pre, with_kwargs=True),
            self.model.register_forward_hook(self._top_post, always_call=True),
        ]
        for j in sorted(record):
            hooks.append(
                self.blocks[j].register_forward_pre_hook(self._block_pre(j), with_kwargs=True)
            )
            hooks.append(self.blocks[j].register_forward_hook(self._block_post))
        try:
            yield self
        finally:
            for h in hooks:
                h.remove()
            self._unswap()
            self._key = None

    def _has(self, key: tuple[int, str]) -> bool:
        return key in self._memory or key in self._spilled

    def _top_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._key = batch_key(args, kwargs)
        if self._key is not None and self.layer and self._has((self.layer, self._key)):
            self._swapped = [(i, self.blocks[i]) for i in range(self.layer)]
            for i, block in self._swapped:
                self.blocks[i] = PassThrough(block, self._structure)

    def _top_post(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._unswap()
        self._key = None

    def _unswap(self) -> None:
        for i, block in self._swapped:
            self.blocks[i] = block
        self._swapped = []

    def _block_pre(self, layer: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
            if self._key is None:
                return None
            key = (layer, self._key)
            if layer == self.layer and self._has(key):
                self.stats["hits"] += 1
                cached = self._load(key)
                if args:
                    return (cached, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": cached}
            if not self._has(key):
                self._record(key, args[0] if args else kwargs["hidden_states"])
            return None

        return hook

    def _block_post(self, module: nn.Module, args: tuple, output: Any) -> None:
        if isinstance(output, tuple):
            self._structure = len(output)

    def _load(self, key: tuple[int, str]) -> torch.Tensor:
        if key in self._memory:
            return self._memory[key]
        return torch.load(self._spilled[key], map_location=self.device(key[0]), weights_only=True)

    def _fits(self, device: torch.device, size: int) -> bool:
        return self._bytes.get(str(device), 0) + size <= self.budget(device)

    def _evict_for(self, size: int, device: torch.device) -> None:
        """Drop whole layers held on ``device``, other than the current one, until ``size`` more
        bytes fit there."""
        cur = self.layer if self.layer is not None else len(self.blocks)
        held = {k[0] for k, t in self._memory.items() if t.device == device} - {self.layer}
        order = sorted((x for x in held if x > cur), reverse=True) + sorted(
            x for x in held if x < cur
        )
        for layer in order:
            if self._fits(device, size):
                return
            self._drop(layer)
            self.stats["evicted"] += 1

    def _record(self, key: tuple[int, str], hidden: torch.Tensor) -> None:
        size = hidden.numel() * hidden.element_size()
        dev = self.device(key[0])
        if not self._fits(dev, size) and key[0] == self.layer:
            self._evict_for(size, dev)  # the layer being scored now comes first
        if self._fits(dev, size):
            self._memory[key] = hidden.detach().to(dev, copy=True)
            self._bytes[str(dev)] = self._bytes.get(str(dev), 0) + size
            self.stats["recorded"] += 1
        elif self.spill_dir is not None:
            if self._spill_tmp is None:
                self.spill_dir.mkdir(parents=True, exist_ok=True)
                self._spill_tmp = Path(tempfile.mkdtemp(prefix="prefix-", dir=self.spill_dir))
            path = self._spill_tmp / f"{key[0]}-{key[1]}.pt"
            torch.save(hidden.detach().to("cpu"), path)
            self._spilled[key] = path
            self.stats["spilled"] += 1
        else:
            self.stats["not_kept"] += 1
