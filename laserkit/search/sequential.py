"""What greedy (laserRMT) and compose share: steps decided on validation, each depending on the
ones before, then base and final model scored on test.

They are strategies like the grid (a pure function from completed trials to the next ones), so
they run on the same engine: stored as they finish, resumed for free, and where a step has
several independent candidates (compose: every (τ, ρ) at one layer) they run on all workers."""

from __future__ import annotations

from typing import Any

from . import trial
from .grid import selection_key
from .result import Chosen, Outcome, RunResult, Scores
from .trial import Result, by_accuracy

MIN_SPLIT = 5  # fewer examples than this: no validation/test split, decide on all of them
SAME_TEXT = (
    "decided and scored on the same text (too small to split: no held-out test), so the "
    "final score is optimistic"
)


def same_text(result: RunResult | dict) -> bool:
    """Whether a result was decided on every example and reports its score on them too (one
    perplexity text, as laserRMT's), instead of "chosen on validation, reported on test"."""
    return RunResult.read(result).same_text


def better(new: dict, old: dict, higher_is_better: bool) -> bool:
    """Strictly better by the selection rule (accuracy then log-loss, or the score)."""

    def key(summary: dict) -> tuple:
        return selection_key(summary, higher_is_better, 0)[:-1]

    return key(new) < key(old)


# metrics whose laserRMT greedy keeps a step on an equal score: rmt_laser_snr.py reverts only
# when the perplexity rose (``if new > old``); rmt_laser_dpo.py reverts on ``new <= old``
KEEP_ON_TIE = frozenset({"perplexity"})


def keeps(new: dict, old: dict, higher_is_better: bool) -> bool:
    """laserRMT's greedy rule: strictly better, or equal where the reference keeps ties
    (perplexity); the semantic score and accuracy tasks need a strict improvement."""
    if better(new, old, higher_is_better):
        return True
    metric = new.get("metric")
    return (
        metric in KEEP_ON_TIE
        and not by_accuracy(new)
        and float(new["score"]) == float(old["score"])
    )


def headline(summary: dict) -> float:
    """The number a step is judged by when only 'does not drop' matters."""
    return float(summary["accuracy"] if by_accuracy(summary) else summary["score"])


def decision_split(objective: object) -> str:
    """ "all" for an objective too small to split (one text, as laserRMT's perplexity on a
    file): decide on every example and skip the test phase; otherwise "validation"."""
    size = getattr(objective, "size", None)
    return "all" if size is not None and size < MIN_SPLIT else "validation"


class Walk:
    """The state of a sequential run replayed from the completed trials: the specs it needs
    next (if any), or the finished steps."""

    def __init__(self) -> None:
        self.need: list[dict] = []
        self.base: Result | None = None
        self.final: Result | None = None
        self.kept: list[dict] = []
        self.steps: list[dict] = []


class Sequential:
    """Base of greedy and compose: ``walk(done)`` replays the steps; the test phase and the
    summary are shared."""

    command = "sequential"

    def __init__(self, higher_is_better: bool, split: str) -> None:
        self.hib = higher_is_better
        self.split = split

    def spec(self, edits: list[dict], order: int, split: str | None = None) -> dict:
        return trial.make(self.command, split or self.split, edits, order)

    def walk(self, done: dict[str, Result]) -> Walk:
        raise NotImplementedError

    def _tests(self, w: Walk) -> list[dict]:
        if self.split == "all":
            return []
        return [self.spec([], -1, "test")] + ([self.spec(w.kept, 0, "test")] if w.kept else [])

    def next_specs(self, done: dict[str, Result]) -> list[dict] | None:
        w = self.walk(done)
        if w.need:
            return w.need
        missing = [s for s in self._tests(w) if s["key"] not in done]
        return missing or None

    def summarize(self, done: dict[str, Result]) -> Outcome:
        w = self.walk(done)
        assert w.base is not None and w.final is not None and not w.need
        if self.split == "all":
            base_test, final_test = w.base, w.final
        else:
            tests = [done[s["key"]] for s in self._tests(w)]
            base_test, final_test = tests[0], tests[-1]
        return Outcome(
            chosen=Chosen.of(w.kept, w.final.key if w.kept else None),
            base=Scores(w.base.summary, base_test.summary),
            best=Scores(w.final.summary, final_test.summary),
            steps=w.steps,
            decided_on=self.split,
            held_out_test=self.split != "all",
            note=SAME_TEXT if self.split == "all" else None,
        )


def step_row(i: int, edit: dict, r: Result, keep: bool, best: Result, **extra: Any) -> dict:
    return {
        "step": i,
        "edit": trial.describe_edit(edit),
        "layer": edit["layer"],
        "lname": edit.get("lname"),
        "score": r.summary.get("score"),
        "accuracy": r.summary.get("accuracy"),
        "log_loss": r.summary.get("log_loss"),
        "kept": keep,
        "best_score": best.summary.get("score"),
        "ci95": r.summary.get("ci95"),
        "best_ci95": best.summary.get("ci95"),
        **extra,
    }
