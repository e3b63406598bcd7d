"""Trials as plain data: a spec says which edits to apply and which split to score.

A spec is a JSON dict, so it travels through the trial store and run.json unchanged:
``{"key", "phase", "split", "fraction", "order", "edits": [edit, ...]}``. An edit is
``{"lname", "layer", "intervention"}``: an (τ, ℓ, ρ) of the paper, or a laserRMT candidate (its
lname may be a module path inside the block, as ``resolve`` accepts). The key is a readable
canonical string of split, fraction and edits: two specs with the same key are the same trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.errors import LaserkitError
from ..edit.editor import Editor
from ..interventions import Intervention


@dataclass
class Result:
    """A completed trial: its spec and summary. The per-example records stay in the store
    (``TrialStore.records``), so paired comparisons of base and best (bootstrap, McNemar) can
    fetch exactly the two they need."""

    number: int
    spec: dict
    summary: dict

    @property
    def key(self) -> str:
        return self.spec["key"]


def by_accuracy(summary: dict) -> bool:
    """Whether a trial is judged by accuracy (then log-loss, the paper's rule) or by its score.

    The task's metric decides (summary["metric"]): a semantic-score task also reports a win rate
    as "accuracy", but laserRMT compares the mean semantic score; an F1 task compares F1.
    Summaries without a metric (older runs) keep the accuracy rule.
    """
    return summary.get("accuracy") is not None and summary.get("metric", "accuracy") == "accuracy"


def objective_value(summary: dict, higher_is_better: bool = True) -> float:
    """One number per trial for Optuna (its table, the dashboard, TPE): accuracy with a small
    log-loss tie-break, or the score signed so that larger is better. Selection itself uses
    the full summary (grid.selection_key)."""
    if by_accuracy(summary):
        loss = summary.get("log_loss")
        loss = 0.0 if loss is None or not math.isfinite(loss) else float(loss)
        return float(summary["accuracy"]) - 1e-4 * loss
    score = float(summary["score"])
    return score if higher_is_better else -score


def edit(lname: str, layer: int, iv: Intervention) -> dict:
    return {"lname": lname, "layer": int(layer), "intervention": iv.to_dict()}


def describe_edit(e: dict) -> str:
    iv = Intervention.from_dict(e["intervention"])
    return f"{e['lname']}@{e['layer']}:{iv.describe()}"


def make(phase: str, split: str, edits: list[dict], order: int = 0, fraction: float = 1.0) -> dict:
    """A spec with its key."""
    body = ",".join(describe_edit(e) for e in edits) or "base"
    frac = "" if fraction >= 1.0 else f"|head={fraction:g}"
    return {
        "key": f"{split}{frac}|{body}",
        "phase": phase,
        "split": split,
        "fraction": float(fraction),
        "order": int(order),
        "edits": edits,
    }


def apply_edits(editor: Editor, edits: list[dict]) -> None:
    for e in edits:
        editor.apply(e["lname"], e["layer"], Intervention.from_dict(e["intervention"]))


def lowest_layer(edits: list[dict]) -> int | None:
    """The first layer any edit touches: the blocks before it compute what they always did."""
    layers = [int(e["layer"]) for e in edits]
    return min(layers) if layers else None


def check_edits(editor: Editor, edits: list[dict]) -> None:
    """Fail early, before any trial runs, on an edit this model cannot take."""
    for e in edits:
        if not editor.targets(e["lname"], e["layer"]):
            raise LaserkitError(f"{e['lname']!r} at layer {e['layer']} resolves to no matrix")
