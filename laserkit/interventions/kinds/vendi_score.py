"""vendi-score: keep ⌊ρ·min(m, n)⌋ rows chosen by the greedy Vendi score and rebuild W by least
squares (docs/methods.md, "Vendi"). The algorithm is ``interventions/vendi.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...core.errors import LaserkitError
from ..base import Intervention, check_rho_of, option, register, rho_option

if TYPE_CHECKING:
    import torch

    from ..factors import Factors
    from ..fast_svd import TopFactors


def _bandwidth(value: float | str) -> float | str:
    from ..vendi import check_bandwidth  # noqa: PLC0415 - torch-free import path

    return check_bandwidth(value)


@register(
    "vendi-score", "keep ⌊ρ·min(m,n)⌋ rows chosen by greedy Vendi score, least-squares rebuild"
)
@dataclass(frozen=True)
class VendiScore(Intervention):
    rho: float | None = rho_option()
    use_quality: bool = option(False, "--use-quality", "quality-weighted")
    min_diversity: bool = option(False, "--min-diversity", "minimise diversity instead")
    q: float = option(1.0, "--vendi-q", "order q of the score")
    bandwidth: float | str = option(
        1.0,
        "--bandwidth",
        "RBF bandwidth σ, k = exp(−‖x−y‖²/2σ²): a number (1 is the fork's "
        "kernel) or 'median' (σ = median distance between rows)",
        type=str,
        normalize=_bandwidth,
    )

    def __post_init__(self) -> None:
        check_rho_of(self.kind, self.rho)
        # numbers stay floats, "median" a string: the keys of earlier runs keep their meaning
        object.__setattr__(self, "bandwidth", _bandwidth(self.bandwidth))
        if self.q < 0:
            raise LaserkitError(f"Vendi order q {self.q} must be ≥ 0")

    def compute(
        self, W: torch.Tensor, factors: Factors | TopFactors | None = None
    ) -> tuple[torch.Tensor, dict]:
        from ..rank_reduction import kept_rank  # noqa: PLC0415
        from ..vendi import vendi_reduce  # noqa: PLC0415 - only loaded when used

        assert self.rho is not None  # __post_init__ refuses a missing ρ
        out, info = vendi_reduce(
            W,
            self.rho,
            use_quality=self.use_quality,
            min_diversity=self.min_diversity,
            q=self.q,
            bandwidth=self.bandwidth,
        )
        return out, {"rank": kept_rank(W.shape[0], W.shape[1], self.rho), **info}
