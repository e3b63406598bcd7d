"""mp-threshold (laserRMT): drop the singular values below the Marchenko–Pastur edge, in float64
as laserRMT does (docs/methods.md). The algorithm is ``interventions/mp_threshold.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..base import Intervention, option, register

if TYPE_CHECKING:
    import torch

    from ..factors import Factors
    from ..fast_svd import TopFactors


def _estimator(name: str) -> str:
    from ...spectral.mp import check_estimator  # noqa: PLC0415 - torch-free import path

    return check_estimator(name)


@register("mp-threshold", "laserRMT: drop singular values below the Marchenko–Pastur edge")
@dataclass(frozen=True)
class MPThreshold(Intervention):
    # left out of to_dict at its default so that trial keys of earlier runs keep their meaning
    estimator: str = option(
        "iqr",
        "--estimator",
        "noise edge from laserRMT's IQR σ̂ (iqr) or Gavish–Donoho's "
        "optimal hard threshold (gavish-donoho)",
        normalize=_estimator,
        always_recorded=False,
    )

    svd = "float64"  # laserRMT decomposes and rebuilds in float64 whatever the weight's dtype

    def __post_init__(self) -> None:
        _estimator(self.estimator)

    def describe(self) -> str:
        return self.kind if self.estimator == "iqr" else f"{self.kind}({self.estimator})"

    def compute(
        self, W: torch.Tensor, factors: Factors | TopFactors | None = None
    ) -> tuple[torch.Tensor, dict]:
        from ..factors import Factors  # noqa: PLC0415
        from ..mp_threshold import mp_reduce  # noqa: PLC0415

        # factor_rank is None: the Editor's FactorCache.get(k=None) hands the full SVD (Factors,
        # stored under its own "full" key) or the Editor passes nothing, never TopFactors
        assert factors is None or isinstance(factors, Factors)
        out, k = mp_reduce(W, factors, self.estimator)
        return out, {"rank": k}
