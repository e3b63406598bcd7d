"""Save an edited model as a normal Hugging Face directory, atomically, with a record of the edit.

Everything is written into a temporary sibling directory first and renamed into place at the end
(fileio.atomic_dir), so an interrupted save never leaves a half-written model where the user asked
for one, nor a temporary copy beside it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .._version import __version__
from ..core.errors import LaserkitError, first_line
from ..core.fileio import atomic_dir
from .modelfiles import weight_files

__all__ = ["RECORD", "SavedRecord", "model_card", "save"]

RECORD = "laserkit.json"


class ToJson(Protocol):
    """A typed record that writes itself as JSON (laserkit.edit.record.EditRecord): the io layer
    writes what it is given without importing the layers that make it."""

    def to_json(self) -> dict[str, Any]: ...


Record = ToJson | dict[str, Any]  # a typed record, or one read back from JSON


def plain(edits: Iterable[Record]) -> list[dict[str, Any]]:
    """The records as JSON objects (laserkit.json's ``interventions``)."""
    return [e if isinstance(e, dict) else e.to_json() for e in edits]


@dataclass
class SavedRecord:
    """laserkit.json: which laserkit made the model, from which base, when, and every edited
    matrix; ``extra`` holds what the caller adds (the chosen run's result, GGUF types)."""

    base_model: str
    interventions: list[dict[str, Any]]
    laserkit_version: str = __version__
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "laserkit_version": self.laserkit_version,
            "base_model": self.base_model,
            "created": self.created,
            "interventions": self.interventions,
            **self.extra,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SavedRecord:
        head = ("laserkit_version", "base_model", "created", "interventions")
        return cls(
            base_model=d.get("base_model", ""),
            interventions=list(d.get("interventions") or []),
            laserkit_version=d.get("laserkit_version", ""),
            created=d.get("created", ""),
            extra={k: v for k, v in d.items() if k not in head},
        )


def model_card(base: str, edits: Iterable[Record], extra: str = "") -> str:
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
    rows = plain(edits)
    for e in rows:
        rho = "" if e.get("rho") is None else f"{e['rho']:g}"
        lines.append(
            f"| {e['lname']} | {e['layer']} | `{e['module']}` | {e['kind']} | {rho} | {e['rank']} |"
        )
    if not rows:
        lines.append("| dont | | | (none) | | |")
    return "\n".join(lines) + "\n" + (f"\n{extra}\n" if extra else "")


def edit_record(
    edits: Iterable[Record], *, base: str, extra_record: dict | None = None
) -> dict[str, Any]:
    """The laserkit.json of a saved model as JSON (shared by the in-memory and out-of-core
    saves)."""
    return SavedRecord(base, plain(edits), extra=dict(extra_record or {})).to_json()


def save(
    model,
    tokenizer,
    out: str | os.PathLike,
    edits: Iterable[Record],
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

    edits = plain(edits)
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
