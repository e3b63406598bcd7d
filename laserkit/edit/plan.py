"""What an on-disk edit changes, decided before any file is read: each step resolved to the
checkpoint tensors it touches, grouped by tensor, and one tensor's edits applied.

Both file writers (``ondisk`` for safetensors, ``gguf`` for GGUF) plan with this module and
neither imports the other. Targets are resolved exactly as the in-memory Editor resolves them,
on a skeleton of the model built on the meta device (names and shapes, no storage), then mapped
to checkpoint tensor names; each tensor is edited in float32, as Editor does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..core.errors import LaserkitError
from ..interventions import Intervention, compute
from ..model.targets import Layout, Target, model_layout, resolve
from .record import EditRecord

Step = tuple[str, "str | int", Intervention]  # (lname, lnum, intervention), as Editor.apply
Record = tuple[tuple[int, int], EditRecord]  # (step, target) and the Editor's record


def is_gguf(out: str | os.PathLike | None) -> bool:
    """Whether ``out`` names a GGUF file: the one place the suffix is checked (write.py picks
    the GGUF writer by it; ondisk.py refuses to write a directory of that name)."""
    return out is not None and str(out).endswith(".gguf")


class NotOutOfCore(LaserkitError):
    """This source cannot be edited out of core (no safetensors weights, unmapped names)."""


def skeleton_layout(config: object) -> Layout:
    """The Editor's Layout, from a model built on the meta device (no weights are allocated)."""
    from ..io.load import _auto_class

    if config is None:
        raise NotOutOfCore("the checkpoint has no readable config.json")
    try:
        with torch.device("meta"):
            model = _auto_class(config).from_config(config)
    except (ValueError, KeyError, ImportError, NotImplementedError) as e:
        raise NotOutOfCore(f"cannot build a skeleton of this model: {e}") from None
    layout = model_layout(model)
    layout.base_prefix = getattr(model, "base_model_prefix", "")  # type: ignore[attr-defined]
    return layout


def tensor_name(param: str, names: Iterable[str], base_prefix: str) -> str:
    """The checkpoint's name for a model parameter (older checkpoints drop the base prefix)."""
    names = set(names)
    if param in names:
        return param
    if (
        base_prefix
        and param.startswith(base_prefix + ".")
        and param[len(base_prefix) + 1 :] in names
    ):
        return param[len(base_prefix) + 1 :]
    if base_prefix and f"{base_prefix}.{param}" in names:
        return f"{base_prefix}.{param}"
    raise NotOutOfCore(f"parameter {param} has no tensor of that name in the checkpoint")


@dataclass
class PlannedEdit:
    """One target of one step, with where its tensor lives."""

    order: tuple[int, int]  # (step, target) — records come out in the Editor's order
    target: Target
    iv: Intervention
    tensor: str  # checkpoint tensor name


def plan_edits(layout: Layout, names: Iterable[str], steps: list[Step]) -> list[PlannedEdit]:
    """Resolve every step like Editor.apply (same errors), mapped to checkpoint tensor names."""
    names = list(names)
    out: list[PlannedEdit] = []
    for i, (lname, lnum, iv) in enumerate(steps):
        if iv.noop or lname == "dont":
            continue
        targets = resolve(layout, lname, lnum)
        if not targets:
            raise LaserkitError(f"{lname!r} at layers {lnum} resolves to no matrix in this model")
        for j, t in enumerate(targets):
            name = tensor_name(t.param, names, getattr(layout, "base_prefix", ""))
            out.append(PlannedEdit((i, j), t, iv, name))
    return out


def edit_tensor(
    weight: torch.Tensor, edits: list[PlannedEdit], device: torch.device
) -> tuple[torch.Tensor, list[Record]]:
    """Apply each edit to one tensor in turn, exactly as Editor.apply_targets does."""
    weight = weight.to(device)
    records = []
    with torch.no_grad():
        for e in edits:
            t = e.target
            view = weight.T if t.transposed else weight
            idx = t.row_index()
            dev_idx = None if idx is None else idx.to(device)
            W = (view if dev_idx is None else view[dev_idx]).to(torch.float32, copy=True)
            out, info = compute(W, e.iv, None, name=t.param)
            norm = float(W.norm())
            info["rel_error"] = float((W - out).norm()) / norm if norm else 0.0
            value = out.to(device=device, dtype=view.dtype)
            if dev_idx is None:
                view.copy_(value)
            else:
                view[dev_idx] = value
            records.append((e.order, EditRecord.of(t, tuple(W.shape), e.iv, info)))
    return weight.cpu(), records


def by_tensor(plan: list[PlannedEdit]) -> dict[str, list[PlannedEdit]]:
    """The plan grouped by checkpoint tensor, in plan order: each tensor is read once."""
    groups: dict[str, list[PlannedEdit]] = {}
    for e in plan:
        groups.setdefault(e.tensor, []).append(e)
    return groups


def in_order(records: list[Record]) -> list[EditRecord]:
    """The records in the Editor's order (step, then target), whatever order tensors ran in."""
    return [r for _, r in sorted(records, key=lambda x: x[0])]
