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
  [[diag λ, z], [zᵀ, 0]], z = Qᵀ b. All candidates' arrows are solved in one batched eigensolve
  per step (chunked to bound memory), with the kernel columns of selected rows computed once by
  a matrix product: no Python loop over candidates and no kernel rebuilt per candidate. q = 2
  needs no eigenvalues at all: T = ‖K − I‖_F².
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
_SERIES_MAX = 1e-2  # below this |ε| the excess terms use their Taylor series (no cancellation)
_SERIES_TERMS = 10  # ε^n for n = 2..11: truncation error below eps·ε² for |ε| < 1e-2
_CHUNK_BYTES = 64 << 20
_SERIES_RADIUS = 0.25  # spectral radius under which candidates are scored by power sums
_POWER_TERMS_MAX = 40


def _series(q: float, count: int = 0) -> list[float]:
    """Taylor coefficients c_n (n = 2, 3, ...; ``count`` of them, default _SERIES_TERMS) of the
    excess term (1+ε)^q − 1 − qε, or, for q = 1, of (1+ε) log1p(ε) − ε."""
    count = count or _SERIES_TERMS
    if q == 1.0:
        return [(-1.0) ** n / (n * (n - 1)) for n in range(2, 2 + count)]
    coeffs, c = [], q * (q - 1) / 2
    for n in range(2, 2 + count):
        coeffs.append(c)
        c *= (q - n) / (n + 1)
    return coeffs


def _excess(eps: torch.Tensor, q: float) -> torch.Tensor:
    """Per-eigenvalue excess term, elementwise, accurate to full relative precision.

    The series is cut after the terms that still matter at the batch's largest small |ε| (real
    weights have |ε| ~ 1e-7: three terms, not ten), and the direct formula is evaluated only when
    some |ε| is too large for the series."""
    a = eps.abs()
    small = a < _SERIES_MAX
    top = float(a[small].max()) if bool(small.any()) else 0.0
    terms = _SERIES_TERMS
    if 0.0 < top < _SERIES_MAX:  # |ε|^(n) < 2^-53 · |ε|^0: later terms vanish in rounding
        terms = min(_SERIES_TERMS, max(1, math.ceil(-53 * math.log(2) / math.log(top))))
    poly = torch.zeros_like(eps)
    for c in reversed(_series(q)[:terms]):
        poly = poly * eps + c
    out = eps * eps * poly
    if not bool(small.all()):
        direct = (
            (1 + eps) * torch.log1p(eps) - eps if q == 1.0
            else torch.pow(1 + eps, q) - 1 - q * eps
        )
        out = torch.where(small, out, direct)
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


def _arrow_eigenvalues(lam: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the arrow matrices [[diag lam, z_c], [z_cᵀ, 0]] for every row z_c of z.

    lam: (k,), z: (C, k) → (C, k+1). One batched symmetric eigensolve (LAPACK / cuSOLVER): exact
    to rounding whatever the spacing of lam, where an iterative secular-equation solver stalls
    on the near-degenerate spectra of real weights (K ≈ I puts every λ near 0).
    """
    C, k = z.shape
    A = torch.zeros(C, k + 1, k + 1, dtype=lam.dtype, device=lam.device)
    A[:, :k, :k] = torch.diag(lam)
    A[:, :k, k] = z
    A[:, k, :k] = z
    return torch.linalg.eigvalsh(A)


def _pick(scores: torch.Tensor, maximize: bool) -> int:
    """Position of the lowest-index candidate within TIE_TOL of the best log-score."""
    best = scores.max() if maximize else scores.min()
    near = scores >= best - TIE_TOL if maximize else scores <= best + TIE_TOL
    return int(near.nonzero()[0, 0])


def _power_sum_excess(lam: torch.Tensor, z: torch.Tensor, q: float,
                      terms: int) -> torch.Tensor:
    """T = Σ_μ excess(μ) over the eigenvalues μ of each arrow [[diag lam, z_c], [z_cᵀ, 0]],
    from power sums, without eigenvalues: valid when the spectral radius is small.

    det(x − A)/(x·det(x − Λ)) = 1 − u(1/x), u(y) = Σ_j s_j y^(j+2), s_j = Σ_i z_i² λ_i^j, so the
    power sums obey p_n(A) − p_n(Λ) = n·[y^n] Σ_l u(y)^l / l. Then T = Σ_n c_n p_n(A) with the
    excess series c_n (n = 2..terms). O(k·terms + terms³) per candidate instead of O(k³).
    """
    C, k = z.shape
    N = terms
    dt, dev = lam.dtype, lam.device
    U = torch.zeros(C, N + 1, dtype=dt, device=dev)
    w = z * z
    for j in range(N - 1):  # s_j for j = 0..N−2 sits at y^(j+2)
        U[:, j + 2] = w.sum(1)
        w = w * lam
    # Toeplitz of u per candidate: (P·u)_n = Σ_a P_a u_(n−a), truncated at y^N
    n_idx = torch.arange(N + 1, device=dev)
    diff = n_idx[None, :] - n_idx[:, None]  # n − a
    T_u = torch.where(diff >= 0, U[:, diff.clamp_min(0)], torch.zeros((), dtype=dt, device=dev))
    P = U.clone()
    acc = U.clone()
    for ell in range(2, N // 2 + 1):  # u has no term below y², so u^l starts at y^(2l)
        P = torch.einsum("ca,can->cn", P, T_u)
        acc = acc + P / ell
    c = torch.tensor(_series(q, N - 1), dtype=dt, device=dev)  # c_2..c_N
    p_lam = torch.stack([(lam**n).sum() for n in range(2, N + 1)])
    delta = acc[:, 2:] * torch.arange(2, N + 1, dtype=dt, device=dev)
    return ((p_lam + delta) * c).sum(1)


def _candidate_log_scores(E: torch.Tensor, kcols: torch.Tensor, q: float) -> torch.Tensor:
    """log VS_q(S ∪ {c}) for all candidates c: E = K_S − I (k×k), kcols = K[S, candidates]."""
    n = E.shape[0] + 1
    if q == 2.0:  # T = Σε² = ‖K − I‖_F², no eigenvalues needed
        t = (E * E).sum() + 2 * (kcols * kcols).sum(0)
        return math.log(n) - torch.log1p(t / n)
    lam, Q = torch.linalg.eigh(E)
    z = (Q.T @ kcols).T  # (C, k): the border in E's eigenbasis, so each candidate is an arrow
    out = torch.empty(z.shape[0], dtype=z.dtype, device=z.device)
    # Weyl: every eigenvalue of the arrow lies within max|λ| + ‖z‖ of 0
    radius = float(lam.abs().max()) + z.norm(dim=1)
    series = radius < _SERIES_RADIUS if 0.0 < q < math.inf else torch.zeros_like(radius, dtype=bool)
    if bool(series.any()):
        top = max(float(radius[series].max()), 1e-300)
        # terms n ≤ N: the first dropped one is below 2^-60 of the leading ε² term
        terms = min(_POWER_TERMS_MAX, 2 + math.ceil(60 * math.log(2) / -math.log(top)))
        t = _power_sum_excess(lam, z[series], q, terms)
        out[series] = math.log(n) - t / n if q == 1.0 else math.log(n) + torch.log1p(t / n) / (
            1 - q)
    rest = ~series
    if bool(rest.any()):
        step = max(1, _CHUNK_BYTES // (8 * n * n))  # bound the (chunk, n, n) batch in memory
        out[rest] = torch.cat([log_vendi(_arrow_eigenvalues(lam, zc), q)
                               for zc in z[rest].split(step)])
    return out


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
