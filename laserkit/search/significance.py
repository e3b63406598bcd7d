"""Is the search's best better than the base model by more than chance? The paired statistics of
laserkit.stats on a finished run's per-example records (RUN_DIR/trials/*.jsonl): base → best on
test, and the grid winner's validation gain against the best-of-N gain under no effect."""

from __future__ import annotations

from .. import stats
from .store import Result, TrialStore

SEED = 0


def _metric(summary: dict) -> str:
    return str(summary.get("metric") or "accuracy")


def significance(store: TrialStore, base_test: Result, best_test: Result,
                 base_val: Result | None = None, val_trials: list[Result] | None = None) -> dict:
    """``{"test": compare(base, best), "selection": best_of_n_null(...)}`` (JSON-ready); a part
    whose records are missing or do not hold the same examples is reported as unavailable."""
    out: dict = {}
    metric = _metric(base_test.summary)
    hib = bool(base_test.summary.get("higher_is_better", True))
    try:
        out["test"] = stats.compare(store.records(base_test), store.records(best_test), metric,
                                    hib, seed=SEED)
    except (ValueError, KeyError, OSError, TypeError) as e:
        out["test"] = {"unavailable": str(e)}
    if base_val is not None and val_trials:
        try:
            sel = stats.best_of_n_null(store.records(base_val),
                                       [store.records(t) for t in val_trials], metric, hib,
                                       seed=SEED)
            sel["verdict"] = stats.best_of_n_verdict(sel)
            out["selection"] = sel
        except (ValueError, KeyError, OSError, TypeError) as e:
            out["selection"] = {"unavailable": str(e)}
    return out


def lines(result: dict) -> list[str]:
    """Plain sentences for the table and the report."""
    sig = result.get("significance") or {}
    out = []
    test = sig.get("test", {})
    if "verdict" in test:
        out.append(f"test, best − base {test['metric']}: {test['verdict']}")
        if "log_loss" in test:
            ll = test["log_loss"]
            out.append(f"test, best − base log-loss: {ll['diff']:+.4f} "
                       f"(95% CI {ll['ci95'][0]:+.4f} to {ll['ci95'][1]:+.4f})")
    elif "unavailable" in test:
        out.append(f"test significance unavailable: {test['unavailable']}")
    sel = sig.get("selection", {})
    if "verdict" in sel:
        out.append(f"selection: {sel['verdict']}")
    return out
