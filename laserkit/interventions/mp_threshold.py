"""laserRMT's reduction: keep the singular values above the Marchenko–Pastur edge (docs/methods.md).

As in laserRMT, the SVD and the reconstruction run in float64 whatever the weight's dtype; the
caller casts the result back.
"""

from __future__ import annotations

import torch

from ..spectral.mp import mp_threshold
from .factors import Factors


def mp_reduce(
    W: torch.Tensor, factors: Factors | None = None, estimator: str = "iqr"
) -> tuple[torch.Tensor, int]:
    """W (in float64) with every singular value ≤ τ dropped; also returns how many were kept.

    ``factors`` are used only when they are float64 (an SVD of the float64 weight); otherwise the
    float64 SVD is computed here.
    """
    f = factors if factors is not None and factors.S.dtype == torch.float64 else None
    if f is None:
        f = Factors.of(W.to(torch.float64))
    tau = mp_threshold(f.S, W.shape[0], W.shape[1], estimator=estimator)
    k = int((f.S > tau).sum())
    return f.truncate(k), k
