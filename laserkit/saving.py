"""Save an edited model as a normal Hugging Face directory, atomically, with a record of the edit.

Everything is written into a temporary sibling directory first and renamed into place at the end,
so an interrupted save never leaves a half-written model where the user asked for one.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .errors import LaserkitError

RECORD = "laserkit.json"


def atomic_dir(out: Path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call ``write(tmp)`` then move ``tmp`` to ``out``; on any failure nothing appears at out."""
    out = Path(out)
    if out.exists() and not overwrite and any(out.iterdir()):
        raise LaserkitError(f"{out} exists and is not empty; choose another --out or add --force")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file through a temporary sibling and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure as PNG through a temporary sibling and an atomic rename, then
    close it (no timestamp metadata, so the same run gives the same bytes)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, metadata={"Software": None})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


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


def save(model, tokenizer, out: str | os.PathLike, edits: list[dict], *, base: str,
         overwrite: bool = False, extra_record: dict | None = None) -> Path:
    """Save model + tokenizer + laserkit.json + README.md into ``out`` atomically."""
    record = edit_record(edits, base=base, extra_record=extra_record)
    if getattr(model, "hf_quantizer", None) is not None:
        from .loading import strip_quantization

        strip_quantization(model)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
        (tmp / "README.md").write_text(model_card(base, edits))

    return atomic_dir(Path(out), write, overwrite=overwrite)
