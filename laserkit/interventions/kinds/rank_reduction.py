"""rank-reduction (LASER): the best rank-⌊ρ·min(m, n)⌋ approximation by exact SVD. The algorithm
is ``interventions/rank_reduction.py``; here is the kind: its fields, checks and how it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..base import Intervention, check_rho_of, option, register, rho_option

if TYPE_CHECKING:
    import torch

    from ..factors import Factors
    from ..fast_svd import TopFactors
    from ..rank_reduction import SvdMethod


def _svd_method(value: str) -> str:
    from ..rank_reduction import check_svd_method  # noqa: PLC0415 - torch-free import path

    return check_svd_method(value)


def _method(name: str) -> SvdMethod:
    from ..rank_reduction import SVD_METHODS  # noqa: PLC0415 - torch-free import path

    return SVD_METHODS.get(name)


@register("rank-reduction", "LASER: best rank-⌊ρ·min(m,n)⌋ approximation by exact SVD")
@dataclass(frozen=True)
class RankReduction(Intervention):
    rho: float | None = rho_option()
    svd_method: str = option(
        "exact",
        "--svd",
        "how the truncation is computed: 'exact' (top-k vectors, checked "
        "against the k-th gap; full SVD when the check fails), 'full' (full LAPACK SVD) or "
        "'lowrank-niter2' (the LASER reference's randomized torch.svd_lowrank, seeded: NOT the "
        "exact truncation, only to reproduce the reference)",
        type=str,
        normalize=_svd_method,
        always_recorded=False,
    )

    svd = "compute"  # the SVD of the matrix in the Editor's compute dtype, reused for every ρ

    def __post_init__(self) -> None:
        check_rho_of(self.kind, self.rho)
        _svd_method(self.svd_method)

    def factor_dtype(self, compute_dtype: torch.dtype) -> torch.dtype | None:
        """No cached factors for a method that decomposes each time (the randomized reference)."""
        if _method(self.svd_method).factors is None:
            return None
        return super().factor_dtype(compute_dtype)

    def factor_rank(self, shape: tuple[int, int]) -> int | None:
        """The top-k vectors for a method that reads only those ('exact'), else the full SVD."""
        if _method(self.svd_method).factors != "top":
            return None
        from ..rank_reduction import kept_rank  # noqa: PLC0415

        return kept_rank(shape[0], shape[1], self._rho())

    def compute(
        self, W: torch.Tensor, factors: Factors | TopFactors | None = None
    ) -> tuple[torch.Tensor, dict]:
        from ..rank_reduction import kept_rank  # noqa: PLC0415

        out = _method(self.svd_method).reduce(W, self._rho(), factors)
        return out, {"rank": kept_rank(W.shape[0], W.shape[1], self._rho())}

    def _rho(self) -> float:
        assert self.rho is not None  # __post_init__ refuses a missing ρ
        return self.rho
