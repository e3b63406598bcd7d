"""LASER: replace W by its best rank-k approximation, k = int(min(m, n)·ρ) (docs/methods.md).

The edit is the exact truncation, reached by default without a full SVD (fast_svd.py: top-k
vectors only, checked a posteriori, full SVD when the check fails), hence deterministic, unlike the
reference's unseeded ``torch.svd_lowrank``; ``lowrank_reduce`` reproduces that reference route,
seeded, on request only. Factors are computed once per matrix and reused for every ρ by the
caller (see edit.FactorCache).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..core.errors import LaserkitError
from ..core.registry import Registry
from .factors import Factors
from .fast_svd import TopFactors, decompose


def rho_from_rate(rate: float) -> float:
    """The reference CLI's rate in [0, 10]: ρ = (10 − rate)·0.1 (rate 9.9 keeps 1%), computed in
    the reference's order of operations (laser/*_laser.py: ``(10 - rate) * 0.1``) so that the
    floating-point ρ, and hence the kept rank, is the reference's."""
    if not 0.0 <= rate <= 10.0:
        raise LaserkitError(f"rate {rate} is outside [0, 10] (ρ = (10 − rate)·0.1; 9.9 keeps 1%)")
    return (10 - rate) * 0.1


def check_rho(rho: float) -> float:
    if not 0.0 <= rho <= 1.0:
        raise LaserkitError(f"rho {rho} is outside [0, 1] (the fraction of the rank kept)")
    return rho


def kept_rank(m: int, n: int, rho: float) -> int:
    """k = int(min(m, n)·ρ) in floating point, exactly as the reference's do_low_rank
    (laser/matrix_utils.py: ``int(max_rank * k)``), so a product a hair below a whole number
    keeps one component fewer (0.29·100 = 28.999… gives 28, as the reference).
    ``legacy_kept_rank`` is the rule laserkit used before (definitions 1)."""
    return min(min(m, n), int(min(m, n) * check_rho(rho)))


def legacy_kept_rank(m: int, n: int, rho: float) -> int:
    """Definitions 1 (laserkit ≤ 0.1.0 runs): ⌊min(m, n)·ρ + 1e-9⌋, one more component than the
    reference whenever the product is a whole number in exact arithmetic."""
    return min(min(m, n), math.floor(min(m, n) * check_rho(rho) + 1e-9))


def legacy_rho_from_rate(rate: float) -> float:
    """Definitions 1: ρ = 1 − 0.1·rate (differs from the reference's in the last bits)."""
    return 1.0 - 0.1 * rate


def rank_reduce(
    W: torch.Tensor, rho: float, factors: Factors | TopFactors | None = None
) -> torch.Tensor:
    """Best rank-⌊min(m,n)·ρ⌋ approximation of W (in W's dtype, which should be ≥ float32).

    Without ``factors``, only the top-k singular vectors are computed (fast_svd.decompose)."""
    k = kept_rank(W.shape[0], W.shape[1], rho)
    if k == min(W.shape):
        return W.clone()
    f = factors if factors is not None else decompose(W, k)
    return f.truncate(k)


def lowrank_reduce(W: torch.Tensor, rho: float, niter: int = 2, seed: int = 0) -> torch.Tensor:
    """The LASER reference's edit: randomized ``torch.svd_lowrank(W, q=k, niter)``, seeded.

    Not the best rank-k approximation (25 % from the exact edit on a 7B-shaped fc_in at
    ρ = 0.01: bench/RESULTS.md, docs/methods.md); offered as ``--svd lowrank-niter2`` to
    reproduce the reference's numbers."""
    k = kept_rank(W.shape[0], W.shape[1], rho)
    if k == min(W.shape):
        return W.clone()
    if k == 0:
        return torch.zeros_like(W)
    with torch.random.fork_rng(devices=[W.device] if W.device.type == "cuda" else []):
        torch.manual_seed(seed)
        U, S, V = torch.svd_lowrank(W, q=k, niter=niter)
    return (U * S) @ V.T


@dataclass(frozen=True)
class SvdMethod:
    """One way to compute the rank-k truncation (``--svd``): what the Editor caches for it and
    the edit itself, so that a new method is one entry of ``SVD_METHODS``.

    ``factors``: "top" (the top-k vectors, fast_svd.TopFactors), "full" (the full SVD) or None
    (nothing cached: it decomposes each time). ``reduce(W, ρ, factors)`` is Ŵ, ``factors`` being
    the cached ones or None."""

    about: str
    factors: str | None
    reduce: Callable[[torch.Tensor, float, Factors | TopFactors | None], torch.Tensor]


def _full_reduce(W: torch.Tensor, rho: float, factors: Factors | TopFactors | None) -> torch.Tensor:
    return rank_reduce(W, rho, factors if factors is not None else Factors.of(W))


SVD_METHODS: Registry[SvdMethod] = Registry("--svd", group="svd_methods")
SVD_METHODS.register(
    "exact",
    SvdMethod(
        "the exact truncation from the top-k singular vectors only (checked; full SVD when the "
        "check fails)",
        "top",
        rank_reduce,
    ),
)
SVD_METHODS.register(
    "full",
    SvdMethod(
        "the exact truncation from a full LAPACK SVD (slower; what laserkit did before)",
        "full",
        _full_reduce,
    ),
)
SVD_METHODS.register(
    "lowrank-niter2",
    SvdMethod(
        "torch.svd_lowrank(q=k, niter=2), seeded: the LASER reference's randomized SVD, NOT the "
        "exact truncation (reproduces the reference only)",
        None,
        lambda W, rho, factors: lowrank_reduce(W, rho),
    ),
)


def check_svd_method(name: str) -> str:
    """``name`` when it is a registered SVD method; one line listing them otherwise."""
    SVD_METHODS.get(name)
    return name
