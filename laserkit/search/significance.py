"""Is the search's best better than the base model by more than chance? The paired statistics of
laserkit.eval.stats on a finished run's per-example records (from the trial store): base → best on
test, and for grid and TPE searches the winner's validation gain against the best-of-N gain of
as many trials under no effect (docs/methods.md, "Is the improvement real?")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..eval import stats
from . import trial
from .result import RunResult
from .sequential import SAME_TEXT
from .trial import Result

if TYPE_CHECKING:
    from .store import TrialStore

SEED = 0
BEST_OF_N = ("grid", "tpe")  # strategies that pick the best of independent validation trials


def base_and_best(
    done: dict[str, Result], result: RunResult | dict, split: str | None = None
) -> tuple[Result, Result]:
    """The base model's and the chosen model's trials on one split (default: test, or "all"
    where the run decided on every example)."""
    res = RunResult.read(result)
    split = split or ("all" if res.same_text else "test")
    base = done[trial.make(split, split, [])["key"]]
    edits = res.chosen.edits
    return base, done[trial.make(split, split, edits)["key"]] if edits else base


def _metric(summary: dict) -> str:
    return str(summary.get("metric") or "accuracy")


def significance(store: TrialStore, result: RunResult, done: dict[str, Result]) -> dict:
    """``{"test": compare(base, best), "selection": best_of_n_null(...)}`` (JSON-ready); a part
    whose records are missing or do not hold the same examples is reported as unavailable."""
    out: dict = {}
    base_test, best_test = base_and_best(done, result)
    metric = _metric(base_test.summary)
    hib = bool(base_test.summary.get("higher_is_better", True))
    try:
        base_records = store.records(base_test)
        if len(base_records) < 2:  # a bootstrap over one text resamples nothing
            raise ValueError(
                f"{len(base_records)} example (one text): nothing to resample, so "
                "no confidence interval"
            )
        out["test"] = stats.compare(base_records, store.records(best_test), metric, hib, seed=SEED)
    except (ValueError, KeyError, OSError, TypeError) as e:
        out["test"] = {"unavailable": str(e)}
    if result.strategy in BEST_OF_N and not result.same_text:
        base_val = done.get(trial.make("validation", "validation", [])["key"])
        trials = [
            r
            for r in done.values()
            if r.spec["split"] == "validation"
            and r.spec["edits"]
            and r.spec.get("fraction", 1.0) >= 1.0
        ]
        if base_val is not None and trials:
            trials.sort(key=lambda r: r.key)  # the same order whatever the workers did
            try:
                sel = stats.best_of_n_null(
                    store.records(base_val),
                    [store.records(t) for t in trials],
                    metric,
                    hib,
                    seed=SEED,
                )
                sel["verdict"] = stats.best_of_n_verdict(sel)
                out["selection"] = sel
            except (ValueError, KeyError, OSError, TypeError) as e:
                out["selection"] = {"unavailable": str(e)}
    return out


def lines(result: RunResult | dict) -> list[str]:
    """Plain sentences for the table and the report."""
    result = RunResult.read(result)
    sig = result.significance or {}
    out = []
    test = sig.get("test", {})
    # one text: the comparison is on the text the steps were decided on, not a held-out test
    where = "same text as the decisions (not held out)" if result.same_text else "test"
    if "verdict" in test:
        out.append(f"{where}, best − base {test['metric']}: {test['verdict']}")
        if "log_loss" in test:
            ll = test["log_loss"]
            out.append(
                f"{where}, best − base log-loss: {ll['diff']:+.4f} "
                f"(95% CI {ll['ci95'][0]:+.4f} to {ll['ci95'][1]:+.4f})"
            )
    elif "unavailable" in test:
        out.append(f"{where}: significance unavailable: {test['unavailable']}")
    if result.same_text:
        out.append(f"note: {SAME_TEXT}")
    sel = sig.get("selection", {})
    if "verdict" in sel:
        out.append(f"selection: {sel['verdict']}")
    return out
