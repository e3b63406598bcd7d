"""The plain greedy Vendi selection of SPEC §2, written directly (slow), as the reference that the
fast path in laserkit.interventions.vendi must match. Shared by tests/test_vendi.py and
bench/bench_vendi.py.

Per step and per candidate: the kernel of S ∪ {c} from explicit pairwise differences, one
eigendecomposition, the score. Log-scores come from laserkit's ``log_vendi`` (SPEC's formula in a
cancellation-free form; test_vendi checks it against the naive formula) and ties use the same
documented rule (within TIE_TOL of the best, lowest index wins).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial.distance import cdist

from laserkit.interventions.vendi import TIE_TOL, log_vendi


def direct_log_score(X: np.ndarray, idx: list[int], *, use_quality: bool, q: float,
                     bandwidth: float) -> float:
    """log VS_q (or log qVS) of the rows X[idx], by the definition."""
    Y = X[idx]
    K = np.exp(-cdist(Y, Y, "sqeuclidean") / (2 * bandwidth**2))
    eps = np.linalg.eigvalsh(K - np.eye(len(idx)))
    score = float(log_vendi(torch.from_numpy(eps), q))
    if use_quality:
        score += math.log(np.mean(np.exp(-(Y * Y).sum(1))))
    return score


def direct_select(W: torch.Tensor | np.ndarray, r: int, *, use_quality: bool = False,
                  min_diversity: bool = False, q: float = 1.0, bandwidth: float = 1.0,
                  steps: int | None = None) -> tuple[list[int], float]:
    """Greedy selection: ``steps`` (default r) rows and the score of the chosen set."""
    X = np.asarray(W, dtype=np.float64)
    chosen: list[int] = []
    best = 0.0
    for _ in range(r if steps is None else steps):
        scores = {
            c: direct_log_score(X, [*chosen, c], use_quality=use_quality, q=q, bandwidth=bandwidth)
            for c in range(len(X)) if c not in chosen
        }
        best = max(scores.values()) if not min_diversity else min(scores.values())
        tied = [c for c, s in scores.items() if abs(s - best) <= TIE_TOL]
        chosen.append(min(tied))
        best = scores[chosen[-1]]
    return chosen, math.exp(best)
