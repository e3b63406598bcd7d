"""The rank-k truncation of W without a full SVD (docs/methods.md, "How LASER's edit is computed").

Ŵ = W·V_k·V_kᵀ (tall W) or U_k·U_kᵀ·W (wide W) needs only the top-k singular vectors of the
smaller side, never the rest of the spectrum. Two routes reach the same edit as the exact
truncation, chosen by shape and k:

- ``gram``: eigh of the float64 Gram matrix of the smaller side (the scan's route). All vectors
  at once, so one decomposition serves every k; its error is float64 roundoff over the k-th gap.
- ``krylov``: a seeded randomized block Krylov solve (float32 products, float64 Rayleigh–Ritz)
  deepened until an a-posteriori residual check says the k-th gap is resolved; for small k on
  large matrices, where it costs a few passes over W instead of a full decomposition.

Both check, after the fact, that the k-th gap is resolved to the tolerance ``TOL`` on the edit
(relative Frobenius error against the exact truncation); when it is not (a tied or nearly tied
k-th singular value), the edit falls back to the full SVD (``Factors``), as before this module.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext

import torch

from ..spectral.mp import SMALL_EIG, threads
from .factors import Factors

TOL = 1e-6  # bound on ‖Ŵ − Ŵ_exact‖_F / ‖Ŵ_exact‖_F the check demands (full float32 SVD: ~1e-5)
GRAM_SIDE = 1024  # smaller side up to which the Gram route is always the cheaper one
KRYLOV_SHARE = 0.015  # Krylov only while k ≤ this share of the smaller side (ρ = 0.01 on 4096)
CHUNK_BYTES = 64 * 2**20  # float64 workspace per slice of the long side
EPS64 = 2.220446049250313e-16
WHOLE_FLOAT64_BYTES = 1 << 30  # Krylov: a float64 copy of W up to this size, else per slice


def _tall(W: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """W as a tall matrix (m ≥ n) and whether it was transposed to get there."""
    return (W.T, True) if W.shape[0] < W.shape[1] else (W, False)


def _step(A: torch.Tensor) -> int:
    return max(1, CHUNK_BYTES // (8 * max(A.shape[1], 1)))


def gram64(A: torch.Tensor) -> torch.Tensor:
    """AᵀA in float64, summed over slices of A's rows so no float64 copy of A is built."""
    n = A.shape[1]
    G = torch.zeros(n, n, dtype=torch.float64, device=A.device)
    s = _step(A)
    for i in range(0, A.shape[0], s):
        block = A[i : i + s].to(torch.float64)
        G.addmm_(block.T, block)
    return G


def times64(A: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """A·V in float64 (V float64), slice by slice of A's rows."""
    out = torch.empty(A.shape[0], V.shape[1], dtype=torch.float64, device=A.device)
    s = _step(A)
    for i in range(0, A.shape[0], s):
        out[i : i + s] = A[i : i + s].to(torch.float64) @ V
    return out


def project(A: torch.Tensor, V: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A·V·Vᵀ, accumulated in float64, returned in ``dtype``."""
    out = torch.empty(A.shape, dtype=dtype, device=A.device)
    s = _step(A)
    for i in range(0, A.shape[0], s):
        out[i : i + s] = ((A[i : i + s].to(torch.float64) @ V) @ V.T).to(dtype)
    return out


class TopFactors:
    """The leading right singular vectors of W's tall orientation, with what the check needs.

    ``lam``: eigenvalues of AᵀA (σ², descending) for the vectors held and one more (the gap);
    ``err``: per k, the bound on sin Θ between the held top-k subspace and the exact one.
    ``truncate(k)`` rebuilds Ŵ for any k ≤ ``kmax`` whose check passes, else from a full SVD.
    """

    def __init__(
        self,
        W: torch.Tensor,
        V: torch.Tensor,
        lam: torch.Tensor,
        r: torch.Tensor,
        noise: torch.Tensor,
        method: str,
    ) -> None:
        self.W = W
        self.V = V  # float64, n × kmax, on W's device
        self.lam = lam  # float64 σ², kmax + 1 of them (the last one bounds the kmax-th gap)
        self.r = r  # float64: per vector, ‖AᵀA·v − λ·v‖ (or a bound on it), kmax + 1 of them
        self.noise = noise  # float64: per k, how far λ_{k+1} may lie above lam[k]
        self.method = method
        self._full: Factors | None = None
        self.fell_back = False

    @property
    def kmax(self) -> int:
        return self.V.shape[1]

    def nbytes(self) -> int:
        ts = [self.W, self.V, self.lam, self.r, self.noise]
        if self._full is not None:
            ts += [self._full.U, self._full.S, self._full.Vh]
        return sum(t.numel() * t.element_size() for t in ts)

    def edit_error_bound(self, k: int) -> float:
        """First-order bound on ‖Ŵ − Ŵ_exact‖_F / ‖Ŵ_exact‖_F at rank k (∞: gap unresolved).

        Each held vector vᵢ (i ≤ k) leans into the discarded space by at most rᵢ / (λᵢ − λ⁺)
        (Davis–Kahan, one vector at a time; λ⁺ the largest λ that may lie beyond the k-th,
        ``lam[k] + noise[k]``), and a lean ε between directions σᵢ and σ⁺ moves the edit by
        ε·(σᵢ² + λ⁺)^½; the sum is taken against ‖Ŵ‖_F = (Σ_{i≤k} λᵢ)^½."""
        if k == 0 or k >= min(self.W.shape):
            return 0.0
        lam = self.lam.clamp_min(0.0)
        top = float(lam[k]) + float(self.noise[k])
        gaps = lam[:k] - top
        if not float(gaps[-1]) > 0.0:
            return math.inf
        size = float(lam[:k].sum())
        if size == 0.0:
            return 0.0
        lean = self.r[:k] / gaps
        return float(((lean**2) * (lam[:k] + top)).sum() / size) ** 0.5

    def truncate(self, k: int) -> torch.Tensor:
        """The rank-k truncation of W in W's dtype (zero for k = 0)."""
        if k == 0:
            return torch.zeros_like(self.W)
        if k > self.kmax:
            return decompose(self.W, k).truncate(k)
        if self.edit_error_bound(k) > TOL:
            return self.full().truncate(k)
        A, flipped = _tall(self.W)
        out = project(A, self.V[:, :k], self.W.dtype)
        return out.T if flipped else out

    def full(self) -> Factors:
        """The full SVD, computed once, for the ranks whose gap the check cannot resolve."""
        if self._full is None:
            self._full = Factors.of(self.W)
        self.fell_back = True
        return self._full


def _gram_route(W: torch.Tensor) -> TopFactors:
    """All singular vectors of the smaller side from eigh of the float64 Gram.

    The Gram is formed and diagonalised with backward error ≲ (m + n)·ε₆₄·λ₁ (λ = σ²), which
    every eigenvalue gap must exceed for its subspace to be resolved; the residual that enters
    Davis–Kahan is that same perturbation on each of the k columns."""
    A, _ = _tall(W)
    G = gram64(A)
    with threads(1) if A.device.type == "cpu" and A.shape[1] <= SMALL_EIG else nullcontext():
        lam, V = torch.linalg.eigh(G)  # as the scan does: one thread for a small Gram
    lam, V = lam.flip(0), V.flip(1)
    n = A.shape[1]
    pert = (A.shape[0] + n) * EPS64 * float(lam[0].clamp_min(0.0))
    bound = lam.new_full((n + 1,), pert)
    return TopFactors(W, V, torch.cat([lam, lam.new_zeros(1)]), bound, bound, "gram")


def _small(A: torch.Tensor) -> AbstractContextManager:
    """One CPU thread for the small factorizations (QR of n × b, eigh of the D × D Ritz
    matrix): with two, LAPACK's threads spin-wait on a busy machine (4.7 s for one eigh of a
    549 × 549 matrix, bench/RESULTS.md)."""
    return threads(1) if A.device.type == "cpu" else nullcontext()


def _orth_against(Z: torch.Tensor, Q: torch.Tensor | None) -> torch.Tensor:
    """Z's columns made orthonormal and orthogonal to Q's (two passes of block Gram–Schmidt)."""
    if Q is not None:
        for _ in range(2):
            Z = Z - Q @ (Q.T @ Z)
    with _small(Z):
        return torch.linalg.qr(Z).Q


def gram_times64(A: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """AᵀA·X in float64 in one pass over A's rows (each slice converted once)."""
    Z = torch.zeros(A.shape[1], X.shape[1], dtype=torch.float64, device=A.device)
    s = _step(A)
    for i in range(0, A.shape[0], s):
        block = A[i : i + s].to(torch.float64)
        Z.addmm_(block.T, block @ X)
    return Z


def _krylov_route(
    W: torch.Tensor, kmax: int, seed: int = 0, max_share: float = 0.25
) -> TopFactors | None:
    """Top kmax right singular vectors by seeded randomized block Krylov iteration in float64.

    Blocks of b = kmax + 1 + p vectors; each step is one pass over A giving AᵀA·X, so the
    Rayleigh–Ritz matrix and the Ritz residuals cost no further pass. The space deepens until the
    kmax-th gap is resolved to TOL, or the route gives up (None) once the space would pass
    ``max_share`` of the smaller side, where a full decomposition is the cheaper one."""
    A, _ = _tall(W)
    n = A.shape[1]
    b = kmax + 1 + max(8, kmax // 2)
    gen = torch.Generator(device=A.device).manual_seed(seed)
    X = _orth_against(torch.randn(n, b, generator=gen, device=A.device, dtype=torch.float64), None)
    if A.numel() * 8 <= WHOLE_FLOAT64_BYTES:  # convert once rather than once per pass
        A = A.to(torch.float64)
    Q, GQ = X, gram_times64(A, X)
    while True:
        if Q.shape[1] >= 2 * b:
            f = _ritz(W, Q, GQ, kmax)
            if f.edit_error_bound(kmax) <= TOL:
                f.method = f"krylov(depth {Q.shape[1] // b})"
                return f
        if Q.shape[1] + b > max_share * n:
            return None
        X = _orth_against(GQ[:, -b:], Q)
        Q, GQ = torch.cat([Q, X], 1), torch.cat([GQ, gram_times64(A, X)], 1)


def _ritz(W: torch.Tensor, Q: torch.Tensor, GQ: torch.Tensor, kmax: int) -> TopFactors:
    """Rayleigh–Ritz on span(Q) (orthonormal, GQ = AᵀA·Q), residuals of the top kmax + 1 pairs.

    Ritz values are lower bounds of the true λ; the (k+1)-th true λ may lie above θ_{k+1} by up
    to that pair's residual norm, which the k-th gap therefore loses (``noise``)."""
    H = Q.T @ GQ
    with _small(H):
        theta, Y = torch.linalg.eigh((H + H.T) / 2)
    theta, Y = theta.flip(0)[: kmax + 1], Y.flip(1)[:, : kmax + 1]
    V = Q @ Y
    r = (GQ @ Y - V * theta).norm(dim=0)
    return TopFactors(W, V[:, :kmax], theta, r, r, "krylov")


def choose(shape: tuple[int, ...], kmax: int) -> str:
    """``krylov`` for small k on large matrices, ``gram`` otherwise (bench/bench_fast_svd.py)."""
    side = min(shape)
    return "krylov" if side > GRAM_SIDE and kmax <= KRYLOV_SHARE * side else "gram"


def decompose(W: torch.Tensor, kmax: int) -> TopFactors:
    """Factors that rebuild W's rank-k truncation for every k ≤ kmax (all k on the Gram route)."""
    kmax = max(1, min(kmax, min(W.shape) - 1))
    if choose(tuple(W.shape), kmax) == "krylov":
        f = _krylov_route(W, kmax)
        if f is not None:
            return f
    return _gram_route(W)
