"""laserRMT's reduction: keep only the singular values above the Marchenko–Pastur edge (SPEC §3)."""

from __future__ import annotations

import torch

from ..spectral import mp_threshold
from .rank_reduction import Factors


def mp_reduce(W: torch.Tensor, factors: Factors | None = None) -> tuple[torch.Tensor, int]:
    """W with every singular value ≤ τ dropped; also returns how many were kept."""
    f = factors if factors is not None else Factors.of(W)
    tau = mp_threshold(f.S, *W.shape)
    k = int((f.S.to(torch.float64) > tau).sum())
    return f.truncate(k), k
