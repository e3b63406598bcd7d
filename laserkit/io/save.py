"""Save an edited model as a normal Hugging Face directory, atomically, with a record of the edit.

Everything is written into a temporary sibling directory first and renamed into place at the end
(fileio.atomic_dir), so an interrupted save never leaves a half-written model where the user asked
for one, nor a temporary copy beside it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from .._version import __version__
from ..core.errors import LaserkitError, first_line
from ..core.fileio import atomic_dir
from .modelfiles import weight_files

__all__ = ["RECORD", "model_card", "save"]

RECORD = "laserkit.json"


def model_card(base: str, edits: list[dict], extra: str = "") -> str:
    lines = [
        "---",
        "tags: [laserkit, laser, low-rank]",
        "---",
        "# Model edited with laserkit",
        "",
        f"Base model: `{base}`. Interventions applied (see `{RECORD}` for the full record):",
        "",
        "| lname | layer | module | intervention | ρ | rank kept |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for e in edits:
        rho = "" if e.get("rho") is None else f"{e['rho']:g}"
        lines.append(
            f"| {e['lname']} | {e['layer']} | `{e['module']}` | {e['kind']} | {rho} | {e['rank']} |"
        )
    if not edits:
        lines.append("| dont | | | (none) | | |")
    return "\n".join(lines) + "\n" + (f"\n{extra}\n" if extra else "")


def edit_record(edits: list[dict], *, base: str, extra_record: dict | None = None) -> dict:
    """The laserkit.json of a saved model (shared by the in-memory and out-of-core saves)."""
    return {
        "laserkit_version": __version__,
        "base_model": base,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "interventions": edits,
        **(extra_record or {}),
    }


def save(
    model,
    tokenizer,
    out: str | os.PathLike,
    edits: list[dict],
    *,
    base: str,
    overwrite: bool = False,
    extra_record: dict | None = None,
    source_dir: str | os.PathLike | None = None,
) -> Path:
    """Save model + tokenizer + laserkit.json + README.md into ``out`` atomically.

    ``source_dir``: the model directory it was loaded from; its tokenizer and chat-template
    files that the save did not write (no tokenizer loaded, a .jinja template) are copied, so
    the output holds the same model files (modelfiles.model_files) as an out-of-core save. The
    output is checked to load before it is published."""
    from .modelfiles import TOKENIZER_FILES, clone_file, model_files

    record = edit_record(edits, base=base, extra_record=extra_record)
    if getattr(model, "hf_quantizer", None) is not None:
        from .load import strip_quantization

        strip_quantization(model)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if source_dir is not None and Path(source_dir).is_dir():
            for p in model_files(source_dir):
                if p.name in TOKENIZER_FILES and not (tmp / p.name).exists():
                    clone_file(p, tmp / p.name)
        (tmp / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
        (tmp / "README.md").write_text(model_card(base, edits))
        check_saved_model(tmp)  # before it is published and success is reported

    return atomic_dir(Path(out), write, overwrite=overwrite)


def check_saved_model(folder: Path) -> None:
    """A saved model must load: config.json parses, every weight file opens, the index agrees
    with the files. Raises one LaserkitError naming what is wrong (headers only: cheap)."""
    from .checkpoint import SafetensorsCheckpoint

    config = folder / "config.json"
    try:
        doc = json.loads(config.read_text())
        if not isinstance(doc, dict) or "model_type" not in doc:
            raise ValueError("no model_type")
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise LaserkitError(
            f"the saved model in {folder} has no readable config.json "
            f"({first_line(e)}); nothing was kept"
        ) from None
    weights = weight_files(folder)
    if not weights:
        raise LaserkitError(f"the saved model in {folder} has no weight files; nothing was kept")
    if any(p.suffix == ".safetensors" for p in weights):
        ckpt = SafetensorsCheckpoint(folder)  # opens every shard, checks sizes and the index
        index = folder / "model.safetensors.index.json"
        if index.exists():
            wanted = json.loads(index.read_text())["weight_map"]
            wrong = [
                t
                for t, f in wanted.items()
                if t not in ckpt._where or ckpt._where[t].path.name != f
            ]
            if wrong:
                raise LaserkitError(
                    f"the saved model in {folder}: index names {wrong[0]} in a "
                    "shard that does not hold it; nothing was kept"
                )
