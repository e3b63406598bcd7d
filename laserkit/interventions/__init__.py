"""Interventions: pure functions W → Ŵ on one matrix in (out, in) orientation.

Every intervention runs in float32 or higher whatever the model's dtype; the caller casts back.
Each kind is a small spec class in ``kinds/`` registered by name in ``KINDS`` (``base.register``;
docs/interventions.md, docs/extending.md); ``Intervention(kind=..., ...)`` builds the kind's
class. Importing this package imports no torch (the CLI builds its options from the kinds at
start-up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_attributes
from . import kinds  # noqa: F401 - registers the shipped kinds, in listing order
from .base import KINDS, Intervention, kind_class, option, register, uses_svd

if TYPE_CHECKING:
    import torch

    from .factors import Factors
    from .fast_svd import TopFactors
    from .rank_reduction import kept_rank, rho_from_rate

# the numerical helpers live with their algorithm (torch); loaded on first use (PEP 562)
_LAZY = {
    "Factors": "factors",
    "kept_rank": "rank_reduction",
    "rho_from_rate": "rank_reduction",
}

__getattr__ = lazy_attributes(__name__, _LAZY, globals())


def check_finite(W: torch.Tensor, name: str = "the matrix") -> None:
    """NaN or ±inf make LAPACK's SVD fail (LinAlgError) and Vendi's kernel meaningless: name the
    tensor in one line instead."""
    import torch  # noqa: PLC0415

    from ..core.errors import LaserkitError  # noqa: PLC0415

    bad = int((~torch.isfinite(W)).sum())
    if bad:
        raise LaserkitError(
            f"weight {name} holds {bad} NaN or infinite value(s) of {W.numel()}: SVD, "
            "Marchenko–Pastur and Vendi need finite weights (the checkpoint is damaged or comes "
            "from a diverged run)"
        )


def compute(
    W: torch.Tensor,
    iv: Intervention,
    factors: Factors | TopFactors | None = None,
    name: str = "the matrix",
) -> tuple[torch.Tensor, dict]:
    """Apply ``iv`` to W (float32 or float64, (out, in)); returns Ŵ and facts for the record.
    ``name`` (the parameter's) is what an error about W's values names."""
    if not iv.noop:
        check_finite(W, name)
    return iv.compute(W, factors)


__all__ = [
    "KINDS",
    "Factors",
    "check_finite",
    "Intervention",
    "compute",
    "kept_rank",
    "kind_class",
    "option",
    "register",
    "rho_from_rate",
    "uses_svd",
]
