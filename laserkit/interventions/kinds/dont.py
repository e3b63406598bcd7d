"""dont: no change, the baseline (the reference's ``--intervention dont``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..base import Intervention, register

if TYPE_CHECKING:
    import torch

    from ..factors import Factors
    from ..fast_svd import TopFactors


@register("dont", "no change (the baseline)")
@dataclass(frozen=True)
class Dont(Intervention):
    noop = True

    def compute(
        self, W: torch.Tensor, factors: Factors | TopFactors | None = None
    ) -> tuple[torch.Tensor, dict]:
        return W.clone(), {"rank": min(W.shape)}
