"""Vendi-score pruning (SPEC §2): keep r diverse rows chosen greedily, rebuild W by least squares.

Exactness. The greedy choice must equal the plain definition (add the row whose set S ∪ {row} has
the best score), so everything here is an exact reformulation, not an approximation:

- Scores are compared as log-scores. With N = |S|, ε the eigenvalues of K_S − I (K_S has a unit
  diagonal, so Σε = 0 exactly) and ν = (1 + ε)/N the eigenvalues of K_S/N,
  log VS_q = log N + log1p(T/N)/(1 − q),  T = Σ [(1 + ε)^q − 1 − qε],
  log VS_1 = log N − Σ [(1 + ε) log1p(ε) − ε]/N.
  This is SPEC's formula rewritten so that the deficit from log N is computed to full relative
  precision: real weight rows are nearly orthogonal under the RBF kernel (K ≈ I), and the naive
  −Σ ν log ν loses the differences between candidates in rounding.
- Adding candidate c to S borders K_S − I = Q diag(λ) Qᵀ with the column b = K[S, c] and a 0 on
  the diagonal. The eigenvalues of the bordered matrix are those of the arrow matrix
  [[diag λ, z], [zᵀ, 0]], z = Qᵀ b: the roots of the secular equation
  f(x) = −x − Σ z_j²/(λ_j − x), one in each gap of λ (interlacing). They are found for every
  candidate at once by a bracketed rational (two-pole) iteration, O(m·r²) per step, instead of an
  eigendecomposition per candidate (O(m·r³) plus Python overhead). q = 2 needs no roots at all:
  T = ‖K − I‖_F².
- Ties. Candidates whose log-score is within TIE_TOL (1e-10, i.e. a relative 1e-10 on the score)
  of the best count as tied and the lowest row index wins. Both this path and a direct
  eigendecomposition agree to ~1e-16 on log-scores, far inside that tolerance, so they pick the
  same rows; exact ties (duplicate rows, or the first step without quality) go to the lowest index.
- Eigenvalues ν below EIG_ZERO count as exactly 0 (0 log 0 = 0, 0^q = 0), so rounding noise of a
  singular K_S (duplicate rows) does not leak into q < 1 scores.
"""

from __future__ import annotations

import math

import torch

from .rank_reduction import kept_rank

TIE_TOL = 1e-10
EIG_ZERO = 1e-12
_EPS = torch.finfo(torch.float64).eps
_SERIES_MAX = 1e-2  # below this |ε| the excess terms use their Taylor series (no cancellation)
_SERIES_TERMS = 10  # ε^n for n = 2..11: truncation error below eps·ε² for |ε| < 1e-2
_MAX_ITERS = 100


def _series(q: float) -> list[float]:
    """Taylor coefficients c_n (n ≥ 2) of the excess term (1+ε)^q − 1 − qε, or, for q = 1, of
    (1+ε) log1p(ε) − ε."""
    if q == 1.0:
        return [(-1.0) ** n / (n * (n - 1)) for n in range(2, 2 + _SERIES_TERMS)]
    coeffs, c = [], q * (q - 1) / 2
    for n in range(2, 2 + _SERIES_TERMS):
        coeffs.append(c)
        c *= (q - n) / (n + 1)
    return coeffs


def _excess(eps: torch.Tensor, q: float) -> torch.Tensor:
    """Per-eigenvalue excess term, elementwise, accurate to full relative precision."""
    direct = (
        (1 + eps) * torch.log1p(eps) - eps if q == 1.0 else torch.pow(1 + eps, q) - 1 - q * eps
    )
    poly = torch.zeros_like(eps)
    for c in reversed(_series(q)):
        poly = poly * eps + c
    out = torch.where(eps.abs() < _SERIES_MAX, eps * eps * poly, direct)
    if q == 1.0:  # 0 log 0 = 0: the term at ε = −1 is 0 − (−1) = 1
        out = torch.where(eps <= -1, torch.ones_like(eps), out)
    return out


def log_vendi(eps: torch.Tensor, q: float = 1.0) -> torch.Tensor:
    """log VS_q of sets from the eigenvalues ε of K − I (last dim: one set's N eigenvalues).

    Exactly SPEC's exp(−Σ ν log ν) (q = 1) or exp(log Σ ν^q/(1 − q)), ν = (1 + ε)/N, written to
    keep the precision of small ε (see the module docstring). q = ∞ gives −log max ν.
    """
    eps = eps.to(torch.float64)
    n = eps.shape[-1]
    eps = torch.where((1 + eps) / n <= EIG_ZERO, torch.full_like(eps, -1.0), eps).clamp_min(-1)
    log_n = math.log(n)
    if math.isinf(q):
        return log_n - torch.log1p(eps.max(-1).values)
    if q == 0.0:
        return torch.log((eps > -1).sum(-1).to(torch.float64))
    t = _excess(eps, q).sum(-1)
    if q == 1.0:
        return log_n - t / n
    return log_n + torch.log1p(t / n) / (1 - q)


def _secular_roots(lam: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the arrow matrices [[diag lam, z_c], [z_cᵀ, 0]] for every row z_c of z.

    lam: (k,) ascending, k ≥ 1; z: (C, k). Returns (C, k+1): root i lies in the gap
    [lam_i, lam_{i+1}] (Weyl bounds close the two outer gaps). Each root is bracketed and refined
    by a two-pole rational model of f that matches its value and slope (quadratic convergence, the
    idea of LAPACK's dlaed4); a step that leaves the bracket is replaced by bisection. A gap
    without a sign change (z_j = 0, or equal λ) collapses onto its pole, which is then an
    eigenvalue, so deflation needs no special case.
    """
    C, k = z.shape
    z2 = (z * z)[:, None, :]  # (C, 1, k)
    znorm = z2.sum(-1).sqrt()  # (C, 1)
    nan = torch.full((1,), math.nan, dtype=lam.dtype, device=lam.device)
    p = torch.cat([nan, lam])  # lower pole of each gap (none for the first)
    r = torch.cat([lam, nan])  # upper pole (none for the last)
    lo = p.expand(C, k + 1).clone()
    hi = r.expand(C, k + 1).clone()
    lo[:, :1] = torch.clamp(lam[0], max=0.0) - znorm
    hi[:, -1:] = torch.clamp(lam[-1], min=0.0) + znorm
    # below[i, j]: pole j is at or below gap i, so it belongs to the lower part ψ of f in gap i
    ar = torch.arange(k + 1, device=z.device)
    below = ar[None, :k] < ar[:, None]
    floor = _EPS * _EPS * (float(lam.abs().max()) + float(znorm.max()) + 1e-300)
    x = 0.5 * (lo + hi)
    frozen = torch.zeros_like(x, dtype=torch.bool)
    for _ in range(_MAX_ITERS):
        d = x[..., None] - lam  # (C, k+1, k): x − λ_j
        d = torch.where(d == 0, torch.full_like(d, 1e-300), d)
        t = z2 / d
        t2 = t / d
        tsum = t.sum(-1)
        dpsi = -torch.where(below, t2, 0.0).sum(-1)  # slope of the lower poles' part
        dphi = -t2.sum(-1) - dpsi
        f = tsum - x
        up = f > 0  # f decreases in each gap: the root lies above x where f > 0
        lo = torch.where(up, x, lo)
        hi = torch.where(up, hi, x)
        new = _model_zero(x, f, dpsi, dphi, p, r)
        # converged: the model's step, or the bracket, is below the float spacing at x
        tol = 2 * _EPS * x.abs() + floor
        conv = frozen | ((new - x).abs() <= tol) | (hi - lo <= tol)
        # A step past a bracket end says the root hugs that end (a pole with a tiny weight): go
        # to the next float inside instead of bisecting (~50 halvings to get there). Bisect when
        # the iterate is already at that end, or the step failed.
        at_lo, at_hi = new <= lo, new >= hi
        new = torch.where(at_lo, torch.nextafter(lo, hi), new)
        new = torch.where(at_hi, torch.nextafter(hi, lo), new)
        bad = ~torch.isfinite(new) | (at_lo & (x == lo)) | (at_hi & (x == hi))
        new = torch.where(bad, 0.5 * (lo + hi), new)
        x = torch.where(conv, x, new)
        frozen = conv
        if bool(frozen.all()):
            break
    return x


def _model_zero(x: torch.Tensor, f: torch.Tensor, dpsi: torch.Tensor, dphi: torch.Tensor,
                p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Zero of a one-pole model of f fitted to its value and slope at x, around the gap's pole
    nearer to x: a − s·y + B/(y − p) or a − s·y − C/(r − y), with B, C ≥ 0 the pole's own
    weight and s ≥ 1 the slope of the rest (the −y term plus the far poles, linearised). Exact
    when one pole dominates or f is nearly linear (K ≈ I); a quadratic with one root in the gap."""
    u_p, w_r = x - p, r - x
    near_p = (u_p < w_r) | torch.isnan(r)
    # around p: s u² − γ u − B = 0, u = y − p > 0
    s = 1 - dphi
    B = -dpsi * u_p**2
    gamma = f + s * x - B / u_p - s * p
    root = torch.sqrt(gamma * gamma + 4 * s * B)
    u = torch.where(gamma > 0, (gamma + root) / (2 * s), 2 * B / (root - gamma))
    # around r: s w² + β w − C = 0, w = r − y > 0
    s = 1 - dpsi
    C = -dphi * w_r**2
    beta = f + s * x + C / w_r - s * r
    root = torch.sqrt(beta * beta + 4 * s * C)
    w = torch.where(beta > 0, 2 * C / (beta + root), (root - beta) / (2 * s))
    return torch.where(near_p, p + u, r - w)


def _pick(scores: torch.Tensor, maximize: bool) -> int:
    """Position of the lowest-index candidate within TIE_TOL of the best log-score."""
    best = scores.max() if maximize else scores.min()
    near = scores >= best - TIE_TOL if maximize else scores <= best + TIE_TOL
    return int(near.nonzero()[0, 0])


def _candidate_log_scores(E: torch.Tensor, kcols: torch.Tensor, q: float) -> torch.Tensor:
    """log VS_q(S ∪ {c}) for all candidates c: E = K_S − I (k×k), kcols = K[S, candidates]."""
    n = E.shape[0] + 1
    if q == 2.0:  # T = Σε² = ‖K − I‖_F², no eigenvalues needed
        t = (E * E).sum() + 2 * (kcols * kcols).sum(0)
        return math.log(n) - torch.log1p(t / n)
    lam, Q = torch.linalg.eigh(E)
    z = (Q.T @ kcols).T  # (C, k)
    # chunks keep the (chunk, k+1, k) work arrays small enough to stay in cache
    step = max(1, (1 << 20) // (n * n))
    return torch.cat([log_vendi(_secular_roots(lam, zc), q) for zc in z.split(step)])


def vendi_select(W: torch.Tensor, r: int, *, use_quality: bool = False,
                 min_diversity: bool = False, q: float = 1.0,
                 bandwidth: float = 1.0) -> tuple[list[int], float]:
    """Greedy Vendi selection of r rows of W (SPEC §2), in selection order, and the score of the
    chosen set (qVS with ``use_quality``). Same choices as the direct definition (see module
    docstring for how ties are decided); float64 on W's device; deterministic."""
    X = W.detach().to(torch.float64)
    m = X.shape[0]
    r = min(r, m)
    if r <= 0:
        return [], 0.0
    sq = (X * X).sum(1)
    log_s = -sq  # log quality, s(w) = exp(−‖w‖²)
    gamma = 1.0 / (2.0 * bandwidth * bandwidth)
    free = torch.ones(m, dtype=torch.bool, device=X.device)
    rows: list[torch.Tensor] = []  # kernel row K[i, :] of each selected i
    chosen: list[int] = []
    log_score = 0.0
    for k in range(r):
        cand = free.nonzero()[:, 0]
        if k == 0:
            scores = torch.zeros(len(cand), dtype=torch.float64, device=X.device)
        else:
            KS = torch.stack(rows)  # (k, m)
            E = KS[:, chosen]
            E = E - torch.diag(torch.diagonal(E))  # K_S − I, with an exactly zero diagonal
            scores = _candidate_log_scores(E, KS[:, cand], q)
        if use_quality:
            base = torch.logsumexp(log_s[chosen], 0) if chosen else None
            lq = log_s[cand] if base is None else torch.logaddexp(base, log_s[cand])
            scores = scores + lq - math.log(k + 1)
        j = _pick(scores, maximize=not min_diversity)
        c = int(cand[j])
        log_score = float(scores[j])
        chosen.append(c)
        free[c] = False
        d2 = (sq + sq[c] - 2 * (X @ X[c])).clamp_min(0)
        d2[c] = 0.0
        rows.append(torch.exp(-gamma * d2))
    return chosen, math.exp(log_score)


def vendi_reconstruct(W: torch.Tensor, idx: list[int]) -> torch.Tensor:
    """W Bᵀ (B Bᵀ)⁺ B with B = W[idx]: each row projected onto the span of the selected rows.

    Through the pseudo-inverse (an SVD), so duplicate or dependent selected rows are fine."""
    X = W.detach().to(torch.float64)
    if not idx:
        return torch.zeros_like(W)
    B = X[idx]
    return ((X @ torch.linalg.pinv(B)) @ B).to(W.dtype)


def vendi_reduce(W: torch.Tensor, rho: float, *, use_quality: bool = False,
                 min_diversity: bool = False, q: float = 1.0,
                 bandwidth: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Keep r = ⌊min(m,n)·ρ⌋ rows chosen by Vendi score; Ŵ (W's dtype/device) and the record."""
    m, n = W.shape
    r = kept_rank(m, n, rho)
    if r >= m:
        return W.clone(), {"selected": list(range(m)), "vendi_score": None}
    idx, score = vendi_select(W, r, use_quality=use_quality, min_diversity=min_diversity, q=q,
                              bandwidth=bandwidth)
    return vendi_reconstruct(W, idx), {"selected": idx, "vendi_score": score}
