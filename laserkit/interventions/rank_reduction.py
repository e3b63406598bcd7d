"""LASER: replace W by its best rank-k approximation, k = ⌊min(m, n)·ρ⌋ (SPEC §1).

The SVD is exact (LAPACK / cuSOLVER through torch.linalg.svd), hence deterministic, unlike the
reference's unseeded ``torch.svd_lowrank``. Factors are computed once per matrix and reused for
every ρ by the caller (see edit.FactorCache).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import LaserkitError


@dataclass(frozen=True)
class Factors:
    """Thin SVD of a matrix: W = U diag(S) Vh."""

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor

    @classmethod
    def of(cls, W: torch.Tensor) -> Factors:
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        return cls(U, S, Vh)

    def truncate(self, k: int) -> torch.Tensor:
        """U_k diag(S_k) Vh_k (the zero matrix for k = 0)."""
        return (self.U[:, :k] * self.S[:k]) @ self.Vh[:k]


def rho_from_rate(rate: float) -> float:
    """The reference CLI's rate in [0, 10]: ρ = 1 − 0.1·rate (rate 9.9 keeps 1%)."""
    if not 0.0 <= rate <= 10.0:
        raise LaserkitError(f"rate {rate} is outside [0, 10] (ρ = 1 − 0.1·rate; 9.9 keeps 1%)")
    return 1.0 - 0.1 * rate


def check_rho(rho: float) -> float:
    if not 0.0 <= rho <= 1.0:
        raise LaserkitError(f"rho {rho} is outside [0, 1] (the fraction of the rank kept)")
    return rho


def kept_rank(m: int, n: int, rho: float) -> int:
    """k = ⌊min(m, n)·ρ⌋, guarded against float error (0.29·100 must give 29, not 28)."""
    return min(min(m, n), math.floor(min(m, n) * check_rho(rho) + 1e-9))


def rank_reduce(W: torch.Tensor, rho: float, factors: Factors | None = None) -> torch.Tensor:
    """Best rank-⌊min(m,n)·ρ⌋ approximation of W (in W's dtype, which should be ≥ float32)."""
    k = kept_rank(*W.shape, rho)
    if k == min(W.shape):
        return W.clone()
    f = factors if factors is not None else Factors.of(W)
    return f.truncate(k)
