"""Edit a checkpoint on disk without building the model: read only the tensors an edit changes.

``reduce`` and ``apply`` change a handful of matrices of a model that may be far larger than
memory. Here the model is never built:

1. targets are resolved exactly as the in-memory Editor resolves them, on a skeleton of the model
   built on the meta device (names and shapes, no storage), then mapped to checkpoint tensor names
   (plan.py, shared with the GGUF writer);
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
CPU default). GGUF output is gguf.py's job (write.py picks the writer); GGUF input with a
directory output reads the GGUF's cached safetensors conversion (io/cache.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..core.errors import LaserkitError
from ..io.checkpoint import _ST_DTYPES, SafetensorsCheckpoint, _SafetensorsFile
from ..io.modelfiles import clone_file, model_files, refuse_overlap
from ..io.open import local_dir
from ..io.save import check_saved_model
from ..io.source import ModelSource, pick_device, pick_dtype
from .plan import (
    NotOutOfCore,
    Record,
    Step,
    by_tensor,
    edit_tensor,
    in_order,
    is_gguf,
    plan_edits,
    skeleton_layout,
)
from .record import EditRecord


def _overwrite(f: _SafetensorsFile, name: str, value: torch.Tensor) -> None:
    """Write a tensor's new bytes at its place in a copied shard (dtype and shape unchanged)."""
    _, _, a, b = f.entries[name]
    data = value.contiguous().view(torch.uint8).reshape(-1).numpy()
    if data.nbytes != b - a:
        raise LaserkitError(f"internal error: {name} changed size while being edited")
    with open(f.path, "r+b") as fh:
        fh.seek(f.data_start + a)
        fh.write(data.data)
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

    Returns the records (as Editor.records) and the output path: a safetensors directory (GGUF
    output is gguf.edit_to_gguf's; write.write_edited picks the writer). With ``out`` None the
    edits are computed and reported but nothing is written. Raises NotOutOfCore when the source
    cannot be edited this way (hub ids, .bin, a ``dtype`` other than ``auto`` that differs from
    an edited tensor's stored dtype).
    """
    if is_gguf(out):
        raise LaserkitError(
            f"{out} names a GGUF file: edit_checkpoint writes a safetensors directory "
            "(laserkit.edit.write.write_edited writes either)"
        )
    src = ModelSource.parse(source)
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
    records: list[Record] = []

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
        return in_order(records), None

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
        recs = in_order(records)
        record = edit_record(recs, base=src.text, extra_record=extra_record)
        (tmp / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
        (tmp / "README.md").write_text(model_card(src.text, recs))
        check_saved_model(tmp)  # before it is published and success is reported

    path = atomic_dir(Path(out), write, overwrite=overwrite)
    return in_order(records), path
