"""The paper's protocol (docs/search.md): a grid of (τ, ℓ, ρ) scored on validation only, the best
chosen by validation accuracy (ties: lower validation log-loss), then only base and best scored
on test. Registered as the ``grid`` strategy; ``halving`` adds successive halving.

The plan is a pure function of the results so far, so any worker can compute the next phase and
enqueue it idempotently: validation grid (optionally a successive-halving round on the head of
validation first) → test for base and best → done.
"""

from __future__ import annotations

import math

from ..interventions import Intervention
from . import trial
from .config import RunConfig
from .params import GridParams, SpaceParams
from .result import Chosen, Outcome, Scores
from .trial import Result, by_accuracy

DEFAULT_LNAMES = ("fc_in", "fc_out")
DEFAULT_RHOS = (0.9, 0.8, 0.6, 0.2, 0.1, 0.05, 0.01)


def grid_edits(
    lnames: list[str], layers: list[int], rhos: list[float], iv: Intervention
) -> list[list[dict]]:
    """Every (τ, ℓ, ρ), grouped by layer (last layer first) so that one layer's trials run
    back to back and reuse its cached prefix; within a layer by τ, then ρ from large to small."""
    out = []
    for layer in sorted(layers, reverse=True):
        for lname in lnames:
            for rho in sorted(rhos, reverse=True):
                one = Intervention.from_dict({**iv.to_dict(), "rho": rho})
                out.append([trial.edit(lname, layer, one)])
    return out


def selection_key(summary: dict, higher_is_better: bool, order: int) -> tuple:
    """Smaller is better: accuracy (desc), log-loss (asc), grid order; or, when the task's metric
    is not accuracy (trial.by_accuracy), its score alone."""
    if by_accuracy(summary):
        loss = summary.get("log_loss")
        loss = math.inf if loss is None or loss != loss else float(loss)
        return (-float(summary["accuracy"]), loss, order)
    score = float(summary["score"])
    return ((-score if higher_is_better else score), order)


def pick(results: list[Result], higher_is_better: bool) -> Result:
    """The best of a list of validation results by the paper's rule (base has order −1, so an
    intervention must beat the base model, not tie it, to be chosen)."""
    return min(results, key=lambda r: selection_key(r.summary, higher_is_better, r.spec["order"]))


def reference_order(r: Result) -> tuple:
    """Where the reference's loop meets a trial (intervention_*_bbh.py: layers from the last
    down, τ in the given order, rates in reversed order, i.e. ρ from small to large); the first
    met wins a tie, as its strict comparisons keep the earlier best."""
    e = r.spec["edits"][0]
    return (-int(e["layer"]), str(e["lname"]), float(e["intervention"].get("rho") or 0.0))


def pick_reference(
    results: list[Result], higher_is_better: bool, lnames: list[str] | None = None
) -> Result:
    """The reference's choice among interventions (the base model never competes): the highest
    validation accuracy, then the lower validation log-loss, then the reference's loop order."""
    order = {n: i for i, n in enumerate(lnames or [])}

    def key(r: Result) -> tuple:
        layer, lname, rho = reference_order(r)
        head = selection_key(r.summary, higher_is_better, 0)[:-1]
        return (*head, layer, order.get(lname, len(order)), lname, rho)

    edited = [r for r in results if r.spec["edits"]]
    if not edited:
        raise ValueError("the reference's selection needs at least one intervention")
    return min(edited, key=key)


def choose(
    base: Result,
    results: list[Result],
    higher_is_better: bool,
    selection: str,
    lnames: list[str] | None = None,
) -> Result:
    """The run's result by its selection rule (config.SELECTIONS): laserkit's (base included,
    winning ties) or the reference's (base excluded)."""
    if selection == "reference":
        return pick_reference(results, higher_is_better, lnames)
    return pick([base, *results], higher_is_better)


def space_edits(cfg: RunConfig) -> list[list[dict]]:
    """The run's (τ, ℓ, ρ) grid as edit lists, in grid order."""
    p = cfg.params_as(SpaceParams)
    return grid_edits(p.lnames, p.layers, p.rhos, Intervention.from_dict(cfg.intervention))


class GridPlan:
    """Which trials a grid search needs next, given the completed ones."""

    def __init__(
        self,
        cfg: RunConfig | list[list[dict]],
        higher_is_better: bool = True,
        split: str = "validation",
        halving: int | None = None,
    ) -> None:
        self.selection, self.lnames = "laserkit", None
        if isinstance(cfg, RunConfig):
            p = cfg.params_as(GridParams)
            halving = p.halving
            self.selection, self.lnames = cfg.selection, p.lnames
            cfg = space_edits(cfg)
        self.edits = cfg
        self.higher_is_better = higher_is_better
        self.halving = halving if halving and halving > 1 else None

    def layers(self) -> set[int]:
        return {int(e["layer"]) for es in self.edits for e in es}

    def all_edits(self) -> list[dict]:
        return [e for es in self.edits for e in es]

    def _validation(self, fraction: float, which: list[int]) -> list[dict]:
        return [
            trial.make("validation", "validation", self.edits[i], order=i, fraction=fraction)
            for i in which
        ]

    def base(self, split: str) -> dict:
        return trial.make(split, split, [], order=-1)

    def _first(self) -> list[dict]:
        every = range(len(self.edits))
        fraction = 1 / self.halving if self.halving else 1.0
        return [self.base("validation"), *self._validation(fraction, list(every))]

    def _final(self, done: dict[str, Result]) -> list[dict]:
        """The validation trials the best is chosen from (needs the first phase done)."""
        first = self._first()[1:]
        if not self.halving:
            return first
        ranked = sorted(
            first,
            key=lambda s: selection_key(done[s["key"]].summary, self.higher_is_better, s["order"]),
        )
        keep = sorted(s["order"] for s in ranked[: math.ceil(len(ranked) / self.halving)])
        return self._validation(1.0, keep)

    def phases(self, done: dict[str, Result]) -> list[list[dict]]:
        """The phases known so far: each a list of specs; a later phase needs the earlier done."""
        phases = [self._first()]
        if any(s["key"] not in done for s in phases[0]):
            return phases
        final = self._final(done)
        if self.halving:
            phases.append(final)
            if any(s["key"] not in done for s in final):
                return phases
        best = self.best(done)
        test = [self.base("test")]
        if best.spec["edits"]:
            test.append(self.test_spec(best))
        phases.append(test)
        return phases

    def test_spec(self, best: Result) -> dict:
        return trial.make("test", "test", best.spec["edits"], order=best.spec["order"])

    def best(self, done: dict[str, Result]) -> Result:
        """The chosen trial among the final validation trials (possibly the base model, unless
        the selection is the reference's)."""
        base = done[self.base("validation")["key"]]
        return choose(
            base,
            [done[s["key"]] for s in self._final(done)],
            self.higher_is_better,
            self.selection,
            self.lnames,
        )

    def next_specs(self, done: dict[str, Result]) -> list[dict] | None:
        """The specs to enqueue now (the first unfinished phase), or None when the run is done."""
        for phase in self.phases(done):
            if any(s["key"] not in done for s in phase):
                return phase
        return None

    def total(self) -> int:
        """Trials in the whole run, for progress bars."""
        n = len(self.edits)
        rounds = n + (math.ceil(n / self.halving) if self.halving else 0)
        return 1 + rounds + 2

    def summarize(self, done: dict[str, Result]) -> Outcome:
        """base → best on validation and test, the chosen (τ, ℓ, ρ), and every validation trial."""
        best = self.best(done)
        base_val = done[self.base("validation")["key"]].summary
        base_test = done[self.base("test")["key"]].summary
        best_test = base_test
        if best.spec["edits"]:
            best_test = done[self.test_spec(best)["key"]].summary
        rows = []
        for s in self._first()[1:] + (self._final(done) if self.halving else []):
            rows.append(trial_row(done[s["key"]], s["fraction"]))
        return Outcome(
            chosen=Chosen.of(best.spec["edits"], best.spec["key"]),
            base=Scores(base_val, base_test),
            best=Scores(best.summary, best_test),
            trials=rows,
        )


def trial_row(r: Result, fraction: float = 1.0) -> dict:
    """One row of a search's trial table: (τ, ℓ, ρ) and the validation metrics."""
    e = r.spec["edits"][0]
    return {
        "lname": e["lname"],
        "layer": e["layer"],
        "rho": e["intervention"].get("rho"),
        "fraction": fraction,
        **_metrics(r.summary),
        "key": r.key,
    }


def _metrics(summary: dict) -> dict:
    keys = (
        "score",
        "accuracy",
        "log_loss",
        "n",
        "metric",
        "higher_is_better",
        "ci95",
        "log_loss_ci95",
    )
    return {k: summary.get(k) for k in keys if k in summary}
