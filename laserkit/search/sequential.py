"""What greedy (laserRMT) and compose share: steps decided on validation, one at a time, each
stored as it finishes (a resumed run replays stored steps without scoring them again), then base
and final model scored on test, and a result.json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..saving import atomic_write_text
from . import trial
from .grid import selection_key
from .runner import Context, open_store, write_config
from .store import Result, TrialStore

Progress = Callable[[int, int], None]


def better(new: dict, old: dict, higher_is_better: bool) -> bool:
    """Strictly better by the selection rule (accuracy then log-loss, or the score)."""
    def key(summary: dict) -> tuple:
        return selection_key(summary, higher_is_better, 0)[:-1]

    return key(new) < key(old)


def headline(summary: dict) -> float:
    """The number a step is judged by when only 'does not drop' matters."""
    return float(summary["accuracy"] if summary.get("accuracy") is not None else summary["score"])


MIN_SPLIT = 5  # fewer examples than this: no validation/test split, decide on all of them


def decision_split(objective: object) -> str:
    size = getattr(objective, "size", None)
    return "all" if size is not None and size < MIN_SPLIT else "validation"


class Steps:
    """A sequential run: its store, context and the validation split it decides on."""

    def __init__(self, run_dir: Path, cfg: dict, ctx: Context, resume: bool,
                 progress: Progress | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg = write_config(self.run_dir, cfg, resume)
        self.ctx = ctx
        self.store: TrialStore = open_store(self.run_dir, self.cfg)
        self.progress = progress
        self.count = 0
        # "all": decide on every example and skip the test phase (one text to score, as
        # laserRMT's perplexity on a single file); otherwise validation, then test
        self.split = self.cfg.get("split") or decision_split(ctx.objective)
        self.hib = ctx.objective.higher_is_better

    def score(self, edits: list[dict], order: int, split: str | None = None,
              total: int = 0) -> Result:
        split = split or self.split
        r = self.ctx.cached(self.store, trial.make(self.cfg["command"], split, edits, order))
        self.count += 1
        if self.progress is not None:
            self.progress(self.count, total)
        return r

    def finish(self, base: Result, final: Result, kept: list[dict], steps: list[dict],
               extra: dict | None = None) -> dict:
        """Score base and final model on test, write result.json, return it."""
        if self.split == "all":
            base_test, final_test = base, final
        else:
            base_test = self.score([], -1, "test")
            final_test = self.score(kept, 0, "test") if kept else base_test
        result = {
            "command": self.cfg["command"], "model": self.cfg["model"],
            "objective": {k: v for k, v in self.cfg["objective"].items() if k != "sequences"},
            "chosen": {"edits": kept, "label": ", ".join(map(trial.describe_edit, kept)) or "base"},
            "base": {"validation": base.summary, "test": base_test.summary},
            "best": {"validation": final.summary, "test": final_test.summary},
            "steps": steps, "decided_on": self.split, **(extra or {}),
        }
        from .significance import significance  # noqa: PLC0415

        result["significance"] = significance(self.store, base_test, final_test)
        atomic_write_text(self.run_dir / "result.json", json.dumps(result, indent=2) + "\n")
        return result
