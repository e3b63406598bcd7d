"""The greedy Vendi selection written directly from its definition, independently of laserkit's
fast path (nothing imported from it): the references tests/test_vendi.py and bench/bench_vendi.py
compare against.

- ``exact_select``: every quantity in mpmath at ``dps`` decimal digits (default 40) from the
  float64 rows: distances, kernel, one symmetric eigensolve per candidate per step, the score
  −Σ ν log ν (or the order-q formula) and the quality mean. Scores are then exact far below
  float64 rounding, so two candidates tie only when their scores agree to ``dps − 10`` digits
  (duplicate rows, symmetric configurations), and the lowest row index wins.
- ``direct_select``: the plain float64 greedy (the kernel precomputed by scipy's cdist, numpy's
  eigensolver per candidate, the score T = Σ κ log κ); first best wins (numpy argmax). Fast enough
  to time against at the size of the default model's matrices.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
from scipy.spatial.distance import cdist, pdist


def exact_bandwidth(X: np.ndarray, bandwidth: float | str, dps: int = 40) -> mpmath.mpf:
    """σ: the number itself, or for 'median' the median of ‖x_i − x_j‖ over all pairs i < j
    (mean of the two middle values for an even count)."""
    with mpmath.workdps(dps):
        if bandwidth != "median":
            return mpmath.mpf(bandwidth)
        rows = [[mpmath.mpf(float(v)) for v in row] for row in X]
        d = sorted(
            mpmath.sqrt(mpmath.fsum((a - b) ** 2 for a, b in zip(x, y, strict=True)))
            for i, x in enumerate(rows)
            for y in rows[i + 1 :]
        )
        h = len(d) // 2
        return d[h] if len(d) % 2 else (d[h - 1] + d[h]) / 2


def exact_log_score(
    K: mpmath.matrix, idx: list[int], log_s: list, *, use_quality: bool, q: float
) -> mpmath.mpf:
    """log VS_q (or log qVS) of the set idx from the full mp kernel K, by the definition."""
    n = len(idx)
    Ks = mpmath.matrix(n, n)
    for a, i in enumerate(idx):
        for b, j in enumerate(idx):
            Ks[a, b] = K[i, j]
    ev = mpmath.eigsy(Ks, eigvals_only=True)
    nu = [v / n for v in ev]
    zero = mpmath.mpf(10) ** (-mpmath.mp.dps + 5)
    if q == 1.0:
        score = -mpmath.fsum(v * mpmath.log(v) for v in nu if v > zero)
    elif math.isinf(q):
        score = -mpmath.log(max(nu))
    else:
        score = mpmath.log(mpmath.fsum(v**q for v in nu if v > zero)) / (1 - q)
    if use_quality:
        score += mpmath.log(mpmath.fsum(mpmath.exp(log_s[i]) for i in idx) / n)
    return score


def exact_select(
    W,
    r: int,
    *,
    use_quality: bool = False,
    min_diversity: bool = False,
    q: float = 1.0,
    bandwidth: float | str = 1.0,
    dps: int = 40,
    follow: list[int] | None = None,
) -> tuple[list[int], list]:
    """Exact greedy: the chosen rows and each step's table {candidate: mp log-score}.

    ``follow``: take these rows as the picks instead (the tables are then the exact scores of
    every candidate along another path, e.g. the fast path's own)."""
    X = np.asarray(W, dtype=np.float64)
    m = len(X)
    with mpmath.workdps(dps):
        sigma = exact_bandwidth(X, bandwidth, dps)
        rows = [[mpmath.mpf(float(v)) for v in row] for row in X]
        K = mpmath.matrix(m, m)
        for i in range(m):
            for j in range(i, m):
                d2 = mpmath.fsum((a - b) ** 2 for a, b in zip(rows[i], rows[j], strict=True))
                K[i, j] = K[j, i] = mpmath.exp(-d2 / (2 * sigma**2))
        log_s = [-mpmath.fsum(v * v for v in row) for row in rows]
        chosen: list[int] = []
        tables = []
        tie = mpmath.mpf(10) ** (-(dps - 10))
        for _ in range(r):
            scores = {
                c: exact_log_score(K, [*chosen, c], log_s, use_quality=use_quality, q=q)
                for c in range(m)
                if c not in chosen
            }
            best = (min if min_diversity else max)(scores.values())
            own = min(c for c, s in scores.items() if abs(s - best) <= tie)
            chosen.append(own if follow is None else follow[len(chosen)])
            tables.append(scores)
    return chosen, tables


def direct_select(
    W,
    r: int,
    *,
    use_quality: bool = False,
    min_diversity: bool = False,
    bandwidth: float | str = 1.0,
) -> list[int]:
    """The plain float64 greedy for q = 1: kernel precomputed, an eigensolve per candidate."""
    X = np.asarray(W, dtype=np.float64)
    sigma = float(np.median(pdist(X))) if bandwidth == "median" else float(bandwidth)
    K = np.exp(-cdist(X, X, "sqeuclidean") / (2 * sigma**2))
    s = np.exp(-(X * X).sum(1))
    chosen: list[int] = []
    for _ in range(r):
        cand = [c for c in range(len(X)) if c not in chosen]
        n = len(chosen) + 1
        scores = np.empty(len(cand))
        for a, c in enumerate(cand):
            idx = [*chosen, c]
            kappa = np.clip(np.linalg.eigvalsh(K[np.ix_(idx, idx)]), 0, None)
            nu = kappa[kappa > 0] / n
            scores[a] = -(nu * np.log(nu)).sum()
            if use_quality:
                scores[a] += math.log(s[idx].mean())
        chosen.append(cand[int(np.argmin(scores) if min_diversity else np.argmax(scores))])
    return chosen
