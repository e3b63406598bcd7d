"""``Factors``, the thin SVD W = U diag(S) Vh that every SVD-based edit reads.

Its own module because both the exact edit (rank_reduction.py) and the top-k route (fast_svd.py,
which falls back to a full SVD when its check fails) need it: each imports it from here, so
neither imports the other back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
