"""A kind that laserkit does not ship, in one file: what docs/interventions.md says a new kind
is. tests/test_intervention_kinds.py imports it (and a subprocess imports it before the CLI) to
show it is applied by the Editor, listed in KINDS and offered by the command line."""

from __future__ import annotations

from dataclasses import dataclass

from laserkit.interventions import Intervention, option, register


@register("keep-top", "keep the top singular directions (a test's throwaway kind)")
@dataclass(frozen=True)
class KeepTop(Intervention):
    top: int = option(1, "--top", "how many singular values to keep")

    svd = "float64"  # reads the Editor's cached float64 factors

    def __post_init__(self) -> None:
        if self.top < 0:
            from laserkit.core.errors import LaserkitError

            raise LaserkitError(f"--top {self.top} must be ≥ 0")

    def compute(self, W, factors=None):
        import torch

        from laserkit.interventions import Factors

        cached = factors is not None
        f = factors if cached else Factors.of(W.to(torch.float64))
        return f.truncate(self.top), {
            "rank": self.top,
            "cached": cached,
            "factor_dtype": str(f.S.dtype),
        }
