"""Interventions: pure functions W → Ŵ on one matrix in (out, in) orientation.

Every intervention runs in float32 or higher whatever the model's dtype; the caller casts back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch

from ..errors import LaserkitError
from ..spectral import check_estimator
from .mp_threshold import mp_reduce
from .rank_reduction import Factors, check_rho, kept_rank, rank_reduce, rho_from_rate

KINDS: dict[str, str] = {
    "rank-reduction": "LASER: best rank-⌊ρ·min(m,n)⌋ approximation by exact SVD",
    "vendi-score": "keep ⌊ρ·min(m,n)⌋ rows chosen by greedy Vendi score, least-squares rebuild",
    "mp-threshold": "laserRMT: drop singular values below the Marchenko–Pastur edge",
    "dont": "no change (the baseline)",
}
USES_SVD = {"rank-reduction", "mp-threshold"}


@dataclass(frozen=True)
class Intervention:
    """What to do to a matrix. Hashable, and round-trips through a plain dict (trial stores)."""

    kind: str = "rank-reduction"
    rho: float | None = None
    use_quality: bool = False
    min_diversity: bool = False
    q: float = 1.0
    bandwidth: float | str = 1.0  # σ of the RBF kernel, or "median" (docs/methods.md, Vendi)
    estimator: str = "iqr"  # mp-threshold: how the noise edge is estimated (spectral.ESTIMATORS)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LaserkitError(
                f"unknown intervention {self.kind!r}: use one of {', '.join(KINDS)}"
            )
        if self.kind in ("rank-reduction", "vendi-score"):
            if self.rho is None:
                raise LaserkitError(f"{self.kind} needs --rho (0..1) or --rate (0..10)")
            check_rho(self.rho)
        from .vendi import check_bandwidth  # noqa: PLC0415 - numbers stay floats: old keys

        object.__setattr__(self, "bandwidth", check_bandwidth(self.bandwidth))
        if self.q < 0:
            raise LaserkitError(f"Vendi order q {self.q} must be ≥ 0")
        check_estimator(self.estimator)

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.kind != "vendi-score":
            for k in ("use_quality", "min_diversity", "q", "bandwidth"):
                d.pop(k)
        # the default estimator is left out so that trial keys of earlier runs keep their meaning
        if self.kind != "mp-threshold" or self.estimator == "iqr":
            d.pop("estimator")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Intervention:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def describe(self) -> str:
        if self.kind == "mp-threshold" and self.estimator != "iqr":
            return f"{self.kind}({self.estimator})"
        if self.kind in ("dont", "mp-threshold"):
            return self.kind
        extra = ""
        if self.kind == "vendi-score":
            flags = [f for f in ("use_quality", "min_diversity") if getattr(self, f)]
            extra = "".join(f", {f}" for f in flags)
            if self.q != 1.0:
                extra += f", q={self.q:g}"
            if self.bandwidth != 1.0:
                bw = self.bandwidth
                extra += f", bandwidth={bw if isinstance(bw, str) else format(bw, 'g')}"
        return f"{self.kind}(ρ={self.rho:g}{extra})"


def check_finite(W: torch.Tensor, name: str = "the matrix") -> None:
    """NaN or ±inf make LAPACK's SVD fail (LinAlgError) and Vendi's kernel meaningless: name the
    tensor in one line instead."""
    bad = int((~torch.isfinite(W)).sum())
    if bad:
        raise LaserkitError(
            f"weight {name} holds {bad} NaN or infinite value(s) of {W.numel()}: SVD, "
            "Marchenko–Pastur and Vendi need finite weights (the checkpoint is damaged or comes "
            "from a diverged run)")


def compute(W: torch.Tensor, iv: Intervention, factors: Factors | None = None,
            name: str = "the matrix") -> tuple[torch.Tensor, dict]:
    """Apply ``iv`` to W (float32 or float64, (out, in)); returns Ŵ and facts for the record.
    ``name`` (the parameter's) is what an error about W's values names."""
    m, n = W.shape
    if iv.kind == "dont":
        return W.clone(), {"rank": min(m, n)}
    check_finite(W, name)
    if iv.kind == "rank-reduction":
        return rank_reduce(W, iv.rho, factors), {"rank": kept_rank(m, n, iv.rho)}
    if iv.kind == "mp-threshold":
        out, k = mp_reduce(W, factors, iv.estimator)
        return out, {"rank": k}
    from .vendi import vendi_reduce  # noqa: PLC0415 - only loaded when used

    out, info = vendi_reduce(
        W, iv.rho, use_quality=iv.use_quality, min_diversity=iv.min_diversity, q=iv.q,
        bandwidth=iv.bandwidth,
    )
    return out, {"rank": kept_rank(m, n, iv.rho), **info}


__all__ = [
    "KINDS",
    "USES_SVD",
    "Factors",
    "check_finite",
    "Intervention",
    "compute",
    "kept_rank",
    "rho_from_rate",
]
