"""What a finished run writes for the user: its report (RUN_DIR/report) and its chosen model
rebuilt and saved (RUN_DIR/best-model, or any --out; how it is written is edit/write.py's rule)."""

from __future__ import annotations

from pathlib import Path

from .session import result_of
from .store import TrialStore


def report(store: TrialStore, out: Path) -> Path:
    """Write OUT/report.md and its plots for a finished run."""
    from .report import write_report  # noqa: PLC0415

    return write_report(result_of(store), Path(out))


def save_chosen(
    store: TrialStore,
    out: Path,
    loaded=None,
    force: bool = False,
    dtype: str | None = None,
    device: str = "auto",
    model: str | None = None,
    console=None,
    trust_remote_code: bool = False,
) -> Path:
    """Rebuild the run's chosen model (base + chosen edits) and save it, by edit/write.py's
    rule: ``FILE.gguf`` for a GGUF base, else an HF directory, edited out of core for a local
    checkpoint (only the edited tensors are read) unless the model is ``loaded`` already; a hub
    id or a dtype other than the stored one loads the model. ``model``: where the base model
    lives on this machine if not where the run recorded it."""
    from ..edit.write import write_edited  # noqa: PLC0415
    from ..interventions import Intervention  # noqa: PLC0415

    cfg = store.config
    result = result_of(store)
    extra = {
        "search": {
            "run": store.run,
            "command": result["command"],
            "strategy": result.get("strategy", result["command"]),
            "chosen": result["chosen"]["label"],
            "base_test": result["base"]["test"],
            "best_test": result["best"]["test"],
        }
    }
    steps = [
        (e["lname"], e["layer"], Intervention.from_dict(e["intervention"]))
        for e in result["chosen"]["edits"]
    ]
    written = write_edited(
        model or cfg.model,
        steps,
        out,
        loaded=loaded,
        overwrite=force,
        device=device,
        dtype=dtype or cfg.dtype,
        trust_remote_code=trust_remote_code,
        extra_record=extra,
    )
    assert written.path is not None  # out is given
    return written.path


def finish(store: TrialStore, run_dir: Path, loaded=None, save_model: bool = True) -> dict:
    """After a run: the report in RUN_DIR/report and, unless told not to, the chosen model in
    RUN_DIR/best-model. Returns the paths written."""
    out = {"report": report(store, Path(run_dir) / "report")}
    if save_model:
        out["model"] = save_chosen(store, Path(run_dir) / "best-model", loaded=loaded, force=True)
    return out
