"""Marchenko–Pastur statistics of a weight matrix (docs/methods.md), for mp-threshold and the scan.

All statistics are computed in float64 from the singular values, as the laserRMT reference does.
The scan gets the singular values the cheapest exact way: the eigenvalues of the smaller Gram
matrix (WᵀW or WWᵀ, accumulated in float64 over chunks so a float64 copy of W is never built).
Squaring doubles the condition number's exponent, so a singular value s loses relative accuracy
of about ε·(s_max/s)² (ε = 2.2e-16): for the quartiles and τ of real weights (s/s_max ≳ 1e-3) that
is ≲ 1e-9, far below anything the statistics can resolve; only singular values below ~1e-7·s_max
are unreliable (tests/test_spectral.py measures this against the SVD route).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from ..core.registry import Registry

GRAM_CHUNK_BYTES = 64 * 2**20  # float64 workspace per chunk while accumulating the Gram matrix
SMALL_EIG = 1024  # eigvalsh of a Gram this small runs single-threaded (see _threads)


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` CPU threads (None: leave as is), restoring the count afterwards.

    LAPACK's symmetric eigensolver gains nothing from threads below ~1000×1000, and on a busy
    machine OpenMP's spin-waiting made one 576×576 eigvalsh take 12 s with 2 threads vs 0.08 s
    with one.
    """
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def sigma_hat(s: torch.Tensor) -> float:
    """Noise scale from the interquartile range of the singular values: (Q75 − Q25) / 1.349."""
    s = s.to(torch.float64)
    q = torch.quantile(s, torch.tensor([0.25, 0.75], dtype=torch.float64, device=s.device))
    return float((q[1] - q[0]) / 1.349)


# How the noise edge τ is estimated from the singular values s of an m × n matrix
# (docs/methods.md, "Marchenko–Pastur"): name → function (s, m, n) → τ. A new estimator is one
# function registered here, or from another package (docs/extending.md).
Estimator = Callable[[torch.Tensor, int, int], float]
ESTIMATORS: Registry[Estimator] = Registry("noise estimator", group="estimators")


def check_estimator(name: str) -> str:
    """``name`` when it is a registered estimator; one line listing them otherwise."""
    ESTIMATORS.get(name)
    return name


def mp_median(beta: float) -> float:
    """Median of the Marchenko–Pastur law of ratio β ∈ (0, 1] with unit variance.

    The law's density on [(1−√β)², (1+√β)²] is √((b−x)(x−a)) / (2πβx); its CDF has no closed form,
    so the median is found by bisection on a fine Gauss–Legendre quadrature of the density.
    """
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"β must be in (0, 1], got {beta}")
    a, b = (1 - math.sqrt(beta)) ** 2, (1 + math.sqrt(beta)) ** 2
    nodes, weights = np.polynomial.legendre.leggauss(200)

    def cdf(x: float) -> float:
        # substitute x = a + (b − a)·sin²(θ) to remove the square-root endpoint singularity
        th_hi = math.asin(math.sqrt((x - a) / (b - a)))
        th = 0.5 * th_hi * (nodes + 1.0)
        xs = a + (b - a) * np.sin(th) ** 2
        dens = np.sqrt(np.clip((b - xs) * (xs - a), 0.0, None)) / (2 * math.pi * beta * xs)
        jac = 2 * (b - a) * np.sin(th) * np.cos(th)
        return float(0.5 * th_hi * np.sum(weights * dens * jac))

    lo, hi = a, b
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < 0.5 else (lo, mid)
    return 0.5 * (lo + hi)


def gd_omega(beta: float) -> float:
    """ω(β) = λ*(β) / √μ_β of Gavish & Donoho's threshold τ = ω(β)·median(s) for unknown noise.

    λ*(β) = √(2(β+1) + 8β / (β + 1 + √(β² + 14β + 1))) is the optimal threshold for known noise
    (in units of σ√n), μ_β the median of the Marchenko–Pastur law (``mp_median``).
    """
    lam = math.sqrt(2 * (beta + 1) + 8 * beta / (beta + 1 + math.sqrt(beta * beta + 14 * beta + 1)))
    return lam / math.sqrt(mp_median(beta))


def _beta(m: int, n: int) -> float:
    return min(m, n) / max(m, n)


@ESTIMATORS.register("iqr")
def iqr_edge(s: torch.Tensor, m: int, n: int) -> float:
    """laserRMT (the reference; the default): τ = σ̂ (1 + √β), σ̂ = IQR(s) / 1.349."""
    return sigma_hat(s) * (1.0 + math.sqrt(_beta(m, n)))


@ESTIMATORS.register("gavish-donoho")
def gavish_donoho_edge(s: torch.Tensor, m: int, n: int) -> float:
    """Gavish & Donoho (2014), the optimal hard threshold for unknown noise: τ = ω(β)·median(s)."""
    return gd_omega(_beta(m, n)) * float(torch.quantile(s.to(torch.float64).cpu(), 0.5))


def mp_threshold(s: torch.Tensor, m: int, n: int, estimator: str = "iqr") -> float:
    """Noise edge τ of a matrix with singular values ``s``; β = min(m, n) / max(m, n).

    ``iqr`` (laserRMT, the default): τ = σ̂ (1 + √β). ``gavish-donoho``: τ = ω(β)·median(s).
    """
    return ESTIMATORS.get(estimator)(s, m, n)


def snr(s: torch.Tensor, tau: float) -> float:
    """Σ s above τ over Σ s at or below τ.

    ∞ when no singular value is ≤ τ (docs/methods.md); NaN when both sums are zero (an all-zero
    matrix has neither signal nor noise).
    """
    s = s.to(torch.float64)
    noise = float(s[s <= tau].sum())
    signal = float(s[s > tau].sum())
    if noise == 0.0:
        return math.nan if signal == 0.0 else math.inf
    return signal / noise


def gram_singular_values(w: torch.Tensor, chunk_bytes: int = GRAM_CHUNK_BYTES) -> torch.Tensor:
    """Singular values of ``w`` (descending, float64) from the eigenvalues of its smaller Gram.

    The Gram matrix is summed over slices of the long side, each converted to float64 on its own,
    so the extra memory is one float64 slice plus the k×k Gram (k = min(m, n)), not a copy of W.
    """
    if w.dim() != 2:
        raise ValueError(f"expected a matrix, got shape {tuple(w.shape)}")
    a = w if w.shape[0] >= w.shape[1] else w.T  # tall: Gram = aᵀa is k×k
    k = a.shape[1]
    gram = torch.zeros(k, k, dtype=torch.float64, device=w.device)
    step = max(1, chunk_bytes // (8 * max(k, 1)))
    for start in range(0, a.shape[0], step):
        block = a[start : start + step].to(torch.float64)
        gram.addmm_(block.T, block)
    with threads(1 if gram.device.type == "cpu" and k <= SMALL_EIG else None):
        ev = torch.linalg.eigvalsh(gram)
    return ev.clamp_min(0.0).sqrt().flip(0)


def svd_singular_values(w: torch.Tensor) -> torch.Tensor:
    """Singular values by a float64 SVD (the reference route; slower, exact for tiny values)."""
    return torch.linalg.svdvals(w.to(torch.float64))


def effective_rank(s: torch.Tensor) -> float:
    """Roy & Vetterli's effective rank: exp of the entropy of s / Σ s (0·log 0 = 0)."""
    s = s.to(torch.float64)
    total = float(s.sum())
    if not math.isfinite(total) or total <= 0.0:
        return math.nan
    p = s[s > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def matrix_stats(
    w_or_s: torch.Tensor,
    m: int | None = None,
    n: int | None = None,
    *,
    method: str = "gram",
    estimator: str = "iqr",
) -> dict:
    """Every per-matrix statistic of docs/methods.md plus spectral norm, stable and effective rank.

    ``w_or_s`` is a matrix (its shape gives m, n) or a 1-D tensor of singular values (then m and n
    are required). ``method`` picks how singular values of a matrix are found: ``gram`` or ``svd``;
    ``estimator`` how the noise edge τ is estimated (``ESTIMATORS``).
    Non-finite weights give NaN statistics and a ``note`` instead of an exception.
    """
    if w_or_s.dim() == 2:
        m, n = w_or_s.shape
        if not bool(torch.isfinite(w_or_s).all()):
            return _undefined(m, n, "weights contain NaN or infinity")
        if method == "gram":
            s = gram_singular_values(w_or_s)
        elif method == "svd":
            s = svd_singular_values(w_or_s)
        else:
            raise ValueError(f"unknown method {method!r}: use gram or svd")
    elif w_or_s.dim() == 1:
        if m is None or n is None:
            raise ValueError("m and n are required when passing singular values")
        s = w_or_s.to(torch.float64).sort(descending=True).values
    else:
        raise ValueError(f"expected a matrix or singular values, got shape {tuple(w_or_s.shape)}")
    s = s.detach().cpu()
    s_max = float(s[0]) if s.numel() else 0.0
    tau = mp_threshold(s, m, n, estimator)
    ratio = snr(s, tau)
    fro2 = float((s * s).sum())
    note = ""
    if s_max == 0.0:
        note = "all-zero matrix: no signal and no noise"
    elif math.isinf(ratio):
        note = "no singular value at or below τ: empty noise, SNR = ∞"
    return {
        "m": int(m),
        "n": int(n),
        "s": s,
        "sigma_hat": sigma_hat(s),
        "mp_threshold": tau,
        "n_above": int((s > tau).sum()),
        "snr": ratio,
        "snr_over_smax": ratio / s_max if s_max > 0 else math.nan,
        "spectral_norm": s_max,
        "stable_rank": fro2 / (s_max * s_max) if s_max > 0 else math.nan,
        "effective_rank": effective_rank(s),
        "note": note,
    }


def _undefined(m: int, n: int, note: str) -> dict:
    """Statistics of a matrix whose spectrum cannot be computed: NaN everywhere, with the reason."""
    nan = math.nan
    return {
        "m": int(m),
        "n": int(n),
        "s": torch.full((min(m, n),), nan, dtype=torch.float64),
        "sigma_hat": nan,
        "mp_threshold": nan,
        "n_above": 0,
        "snr": nan,
        "snr_over_smax": nan,
        "spectral_norm": nan,
        "stable_rank": nan,
        "effective_rank": nan,
        "note": note,
    }
