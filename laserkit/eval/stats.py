"""Is an improvement real? Paired statistics for two models scored on the same examples.

- ``paired_bootstrap``: the mean per-example difference with a percentile 95% interval from a
  seeded bootstrap over examples (both models resampled together, so the pairing is kept).
- ``mcnemar_exact``: the exact two-sided McNemar test for accuracy: under no effect, each of the
  n discordant examples (one model right, the other wrong) goes either way with probability ½,
  so p = min(1, 2·P[Binomial(n, ½) ≤ min(b, c)]).
- ``best_of_n_null``: how large the best validation gain of a grid of N trials is on noise alone.
  Under "no trial changes anything", each example's differences (trial − base) are as likely to
  have the opposite sign; flipping the sign of each example's row (the same flip for every
  trial, which keeps the trials' correlation) and taking the best trial's mean gain gives the
  distribution of the winner's gain under no effect (a sign-flip permutation test with the max
  statistic, Westfall & Young 1993).

All of it works on per-example records (``records.jsonl`` rows) and is deterministic for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ALPHA = 0.05
N_BOOT = 2000
N_PERM = 2000


def record_value(record: dict, metric: str) -> float:
    """One example's contribution to a metric: 1/0 for accuracy, its score for the semantic
    score, its log-loss (mean over the answer's tokens) for log-loss / perplexity."""
    if metric in ("perplexity", "log_loss"):
        return float(record["log_loss"])
    if metric == "semantic_score":
        return float(record["score"])
    if "correct" in record:
        return float(bool(record["correct"]))
    if "predicted" in record and "answer" in record:  # next-token objective rows
        return float(record["predicted"] == record["answer"])
    return float(record[metric])


def _key(record: dict, i: int) -> object:
    return record.get("id", record.get("index", i))


def aligned(base: Sequence[dict], other: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """The two record lists in the same example order (matched by id, or index). Raises
    ValueError when they do not hold the same examples: a paired comparison needs that."""
    kb = [_key(r, i) for i, r in enumerate(base)]
    ko = {_key(r, i): r for i, r in enumerate(other)}
    if len(kb) != len(ko) or set(kb) != set(ko) or len(set(kb)) != len(kb):
        raise ValueError("the two evaluations do not cover the same examples")
    return list(base), [ko[k] for k in kb]


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """mean(b − a) with a percentile bootstrap interval over examples (seeded)."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n = len(d)
    if n == 0:
        return {"diff": math.nan, "ci95": [math.nan, math.nan], "n": 0}
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for s in range(0, n_boot, 256):  # chunks: bounded memory for large n
        k = min(256, n_boot - s)
        means[s : s + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"diff": float(d.mean()), "ci95": [float(lo), float(hi)], "n": n}


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Exact two-sided McNemar test of paired right/wrong outcomes."""
    only_a = sum(bool(x) and not bool(y) for x, y in zip(a, b, strict=True))
    only_b = sum(bool(y) and not bool(x) for x, y in zip(a, b, strict=True))
    n = only_a + only_b
    if n == 0:
        return {"only_base": 0, "only_other": 0, "p_value": 1.0}
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return {"only_base": only_a, "only_other": only_b, "p_value": min(1.0, 2 * tail)}


def compare(
    base: Sequence[dict],
    other: Sequence[dict],
    metric: str = "accuracy",
    higher_is_better: bool = True,
    *,
    seed: int = 0,
    n_boot: int = N_BOOT,
) -> dict:
    """Paired comparison of two evaluations of the same examples: the metric's difference
    (other − base) with a bootstrap 95% CI, the exact McNemar p-value for accuracy, the same
    for the log-loss, and a plain verdict."""
    base, other = aligned(base, other)
    va = [record_value(r, metric) for r in base]
    vb = [record_value(r, metric) for r in other]
    out = {
        "metric": metric,
        "n": len(va),
        "seed": seed,
        **paired_bootstrap(va, vb, n_boot=n_boot, seed=seed),
    }
    if metric == "accuracy":
        out["mcnemar"] = mcnemar_exact([v > 0.5 for v in va], [v > 0.5 for v in vb])
        out["p_value"] = out["mcnemar"]["p_value"]
    if all(
        "log_loss" in r and r["log_loss"] is not None for r in list(base) + list(other)
    ) and metric not in ("log_loss", "perplexity"):
        out["log_loss"] = paired_bootstrap(
            [float(r["log_loss"]) for r in base],
            [float(r["log_loss"]) for r in other],
            n_boot=n_boot,
            seed=seed,
        )
    lo, hi = out["ci95"]
    excludes_zero = lo > 0 or hi < 0
    out["significant"] = bool(excludes_zero and out.get("p_value", 0.0) < ALPHA)
    out["verdict"] = verdict(out, higher_is_better)
    return out


def verdict(cmp: dict, higher_is_better: bool = True) -> str:
    """One plain sentence: significant or not, and which way."""
    lo, hi = cmp["ci95"]
    p = f", McNemar p = {cmp['p_value']:.3g}" if "p_value" in cmp else ""
    span = f"{cmp['diff']:+.4f} (95% CI {lo:+.4f} to {hi:+.4f}{p}, n = {cmp['n']})"
    if not cmp["significant"]:
        return f"not significant: {span}; the difference may be chance"
    better = (cmp["diff"] > 0) == higher_is_better
    return f"significant {'improvement' if better else 'degradation'}: {span}"


def best_of_n_null(
    base: Sequence[dict],
    trials: Sequence[Sequence[dict]],
    metric: str = "accuracy",
    higher_is_better: bool = True,
    *,
    n_perm: int = N_PERM,
    seed: int = 0,
) -> dict:
    """The grid winner's validation gain against the best-of-N gain under no effect.

    ``base``: the base model's validation records; ``trials``: each trial's validation records
    on the same examples. Returns the observed best gain, the no-effect distribution's mean and
    95th percentile, and p = P[best-of-N gain under no effect ≥ observed]. Gains are in the
    metric's units, positive = better (for a lower-is-better metric, base − trial)."""
    if not trials:
        return {"n_trials": 0}
    rows = []
    for t in trials:
        b, o = aligned(base, t)
        rows.append(
            [record_value(y, metric) - record_value(x, metric) for x, y in zip(b, o, strict=True)]
        )
    d = np.asarray(rows, dtype=float)  # trials × examples
    if not higher_is_better:
        d = -d
    n_ex = d.shape[1]
    observed = float(d.mean(axis=1).max()) if n_ex else math.nan
    rng = np.random.default_rng(seed)
    null = np.empty(n_perm)
    for s in range(0, n_perm, 256):
        k = min(256, n_perm - s)
        signs = rng.choice([-1.0, 1.0], size=(k, n_ex))
        null[s : s + k] = (signs @ d.T / max(n_ex, 1)).max(axis=1)
    p = float((1 + (null >= observed - 1e-12).sum()) / (n_perm + 1))
    return {
        "n_trials": len(trials),
        "n": n_ex,
        "metric": metric,
        "seed": seed,
        "observed_gain": observed,
        "null_mean": float(null.mean()),
        "null_q95": float(np.quantile(null, 0.95)),
        "p_value": p,
        "stands_out": p < ALPHA,
    }


def best_of_n_verdict(b: dict) -> str:
    if not b.get("n_trials"):
        return "no trials to compare"
    head = (
        f"best of {b['n_trials']} trials: validation gain {b['observed_gain']:+.4f}; on "
        f"noise alone the best of {b['n_trials']} would gain {b['null_mean']:+.4f} on average "
        f"(95th percentile {b['null_q95']:+.4f}), p = {b['p_value']:.3g}"
    )
    return head + (
        "; the winner stands out"
        if b["stands_out"]
        else "; the winner does NOT stand out from selection noise"
    )
