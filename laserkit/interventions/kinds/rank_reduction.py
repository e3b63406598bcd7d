"""rank-reduction (LASER): the best rank-⌊ρ·min(m, n)⌋ approximation by exact SVD. The algorithm
is ``interventions/rank_reduction.py``; here is the kind: its fields, checks and how it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..base import Intervention, check_rho_of, register, rho_option

if TYPE_CHECKING:
    import torch

    from ..rank_reduction import Factors


@register("rank-reduction", "LASER: best rank-⌊ρ·min(m,n)⌋ approximation by exact SVD")
@dataclass(frozen=True)
class RankReduction(Intervention):
    rho: float | None = rho_option()

    svd = "compute"  # the SVD of the matrix in the Editor's compute dtype, reused for every ρ

    def __post_init__(self) -> None:
        check_rho_of(self.kind, self.rho)

    def compute(self, W: torch.Tensor, factors: Factors | None = None) -> tuple[torch.Tensor,
                                                                             dict]:
        from ..rank_reduction import kept_rank, rank_reduce  # noqa: PLC0415

        return rank_reduce(W, self.rho, factors), {"rank": kept_rank(*W.shape, self.rho)}
