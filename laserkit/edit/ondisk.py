"""Edit a checkpoint on disk without building the model: read only the tensors an edit changes.

``reduce`` and ``apply`` change a handful of matrices of a model that may be far larger than
memory. Here the model is never built:

1. targets are resolved exactly as the in-memory Editor resolves them, on a skeleton of the model
   built on the meta device (names and shapes, no storage), then mapped to checkpoint tensor names;
2. the output directory is made of the source's model files (modelfiles.model_files: config,
   tokenizer, weights and index, nothing else), each copied (a reflink where the file system
   offers one, never a hard link) and never decoded; in a copied shard that holds an edited tensor
   each such tensor is overwritten in place (same dtype and shape, so the header and every offset
   stay as they were); the output is checked to load before it is published;
3. edits are applied tensor by tensor, each tensor's edits in the order given, so peak memory is
   the largest edited tensor plus its SVD workspace, whatever the model's size.

Each edit reads the tensor in its stored dtype, computes in float32 (as Editor does) and writes it
back in the stored dtype: the tensors written equal bit for bit those ``laserkit.save`` writes
after the same edits in memory with ``--dtype`` equal to the stored dtype (float32 checkpoints: the
CPU default). GGUF output is gguf_out's job; GGUF input with a directory output reads the GGUF's
cached safetensors conversion (gguf_cache).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import LaserkitError
from ..interventions import Intervention, compute
from ..io.checkpoint import _ST_DTYPES, SafetensorsCheckpoint, _SafetensorsFile
from ..io.modelfiles import clone_file, model_files, refuse_overlap
from ..io.open import local_dir
from ..io.save import check_saved_model
from ..io.source import ModelSource, pick_device, pick_dtype
from ..model.targets import Layout, Target, model_layout, resolve
from .record import EditRecord

Step = tuple[str, "str | int", Intervention]  # (lname, lnum, intervention), as Editor.apply


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
) -> tuple[torch.Tensor, list[tuple[tuple[int, int], EditRecord]]]:
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
    groups: dict[str, list[PlannedEdit]] = {}
    for e in plan:
        groups.setdefault(e.tensor, []).append(e)
    return groups


def _overwrite(f: _SafetensorsFile, name: str, value: torch.Tensor) -> None:
    """Write a tensor's new bytes at its place in a copied shard (dtype and shape unchanged)."""
    _, _, a, b = f.entries[name]
    data = value.contiguous().view(torch.uint8).reshape(-1).numpy()
    if data.nbytes != b - a:
        raise LaserkitError(f"internal error: {name} changed size while being edited")
    with open(f.path, "r+b") as fh:
        fh.seek(f.data_start + a)
        fh.write(memoryview(data))
        fh.flush()
        os.fsync(fh.fileno())


def edit_checkpoint(
    source: str | os.PathLike | ModelSource,
    steps: list[Step],
    out: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    device: str = "cpu",
    extra_record: dict | None = None,
    progress: Callable[[str], None] | None = None,
    dtype: str = "auto",
) -> tuple[list[EditRecord], Path | None]:
    """Apply ``steps`` to a local checkpoint without building the model.

    Returns the records (as Editor.records) and the output path. With ``out`` None the edits are
    computed and reported but nothing is written. ``out`` ending in ``.gguf`` writes GGUF
    (gguf_out). Raises NotOutOfCore when the source cannot be edited this way (hub ids, .bin,
    a ``dtype`` other than ``auto`` that differs from an edited tensor's stored dtype).
    """
    src = ModelSource.parse(source)
    if out is not None and str(out).endswith(".gguf"):
        from .gguf import edit_to_gguf

        return edit_to_gguf(
            src,
            steps,
            Path(out),
            overwrite=overwrite,
            device=device,
            extra_record=extra_record,
            progress=progress,
        )
    if src.kind == "hub":
        raise NotOutOfCore("a hub id is edited in memory")
    folder = local_dir(src)
    if out is not None:
        for source_path in {folder, *([src.path] if src.path else [])}:
            refuse_overlap(source_path, Path(out))
    if not (
        any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").exists()
    ):
        raise NotOutOfCore(f"{folder} has no safetensors weights")
    ckpt = SafetensorsCheckpoint(folder, source=src.text)
    layout = skeleton_layout(ckpt.config)
    plan = plan_edits(layout, ckpt.shapes(), steps)
    groups = by_tensor(plan)
    dev = pick_device(device)
    if dtype != "auto":
        want = pick_dtype(dtype, dev)
        for name in groups:
            stored = _ST_DTYPES[ckpt.dtype_name(name)]
            if stored != want:
                raise NotOutOfCore(f"--dtype {dtype} differs from {name}'s stored {stored}")
    records: list[tuple[tuple[int, int], EditRecord]] = []

    def run(files: dict[Path, _SafetensorsFile] | None) -> None:
        for i, (name, edits) in enumerate(groups.items()):
            if progress:
                progress(f"editing {name} ({i + 1}/{len(groups)})")
            where = ckpt._where[name]
            weight, recs = edit_tensor(where.read(name), edits, dev)
            records.extend(recs)
            if files is not None:
                _overwrite(files[where.path], name, weight)
            del weight

    if out is None:
        run(None)
        return [r for _, r in sorted(records, key=lambda x: x[0])], None

    from ..core.fileio import atomic_dir
    from ..io.save import RECORD, edit_record, model_card

    edited_files = {ckpt._where[name].path for name in groups}

    def write(tmp: Path) -> None:
        copies: dict[Path, _SafetensorsFile] = {}
        for p in model_files(folder):  # exactly the model: no checkpoint-*/, optimizer.pt, ...
            clone_file(p, tmp / p.name)  # never a hard link; through HF-cache symlinks
            if p in edited_files:
                copies[p] = _SafetensorsFile(tmp / p.name)
        run(copies)
        recs = [r for _, r in sorted(records, key=lambda x: x[0])]
        record = edit_record(recs, base=src.text, extra_record=extra_record)
        (tmp / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
        (tmp / "README.md").write_text(model_card(src.text, recs))
        check_saved_model(tmp)  # before it is published and success is reported

    path = atomic_dir(Path(out), write, overwrite=overwrite)
    return [r for _, r in sorted(records, key=lambda x: x[0])], path
