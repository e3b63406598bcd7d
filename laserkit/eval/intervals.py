"""95 % intervals of one model's score, for plots and summaries (docs/methods.md).

A score from 60 validation examples moves by several points from noise alone; a plot that draws
it without its interval invites reading that noise as a trend. ``score_interval`` gives the
interval from the per-example records an evaluation produced:

- accuracy-like metrics (each example 1 or 0): the Wilson score interval, which stays inside
  [0, 1] and is honest for small n and for accuracies near 0 or 1;
- other per-example means (log-loss, semantic score, lm-eval's per-document metrics): the
  normal interval mean ± 1.96 · sd / √n;
- perplexity: exp of the log-loss interval (perplexity is exp of a mean log-loss).

Paired comparisons of two models are laserkit.eval.stats' job; this is the uncertainty of one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054  # the normal quantile of 0.975


def wilson(k: float, n: int) -> tuple[float, float]:
    """The Wilson 95 % interval of a proportion k/n."""
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    denom = 1 + Z95**2 / n
    mid = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return (max(0.0, mid - half), min(1.0, mid + half))


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """mean ± 1.96 · sd / √n (sd with n − 1); a single value has no spread to estimate."""
    n = len(values)
    if n < 2:
        return (math.nan, math.nan)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = Z95 * sd / math.sqrt(n)
    return (mean - half, mean + half)


def score_interval(records: Sequence[dict], metric: str) -> list[float] | None:
    """The 95 % interval of ``metric`` over an evaluation's records, or None when the records do
    not hold a per-example value of it (corpus metrics, one text)."""
    from .stats import record_value  # noqa: PLC0415 - numpy, only when asked

    if metric == "perplexity":
        lo_hi = score_interval(records, "log_loss")
        return None if lo_hi is None else [math.exp(lo_hi[0]), math.exp(lo_hi[1])]

    def value(r: dict) -> float:
        if metric == "accuracy" and "correct" in r:
            return float(bool(r["correct"]))
        if metric == "semantic_score":
            return float(r["score"])
        return float(r[metric]) if metric in r else record_value(r, metric)

    try:
        values = [value(r) for r in records]
    except (KeyError, TypeError, ValueError):
        return None
    if any(v is None or math.isnan(v) for v in values) or len(values) < 2:
        return None
    if all(v in (0.0, 1.0) for v in values):
        return list(wilson(sum(values), len(values)))
    return list(mean_interval(values))
