"""Marchenko–Pastur statistics of a weight matrix (SPEC §3), shared by mp-threshold and the scan.

All statistics are computed in float64 from the singular values, as the laserRMT reference does.
"""

from __future__ import annotations

import math

import torch


def sigma_hat(s: torch.Tensor) -> float:
    """Noise scale from the interquartile range of the singular values: (Q75 − Q25) / 1.349."""
    s = s.to(torch.float64)
    q = torch.quantile(s, torch.tensor([0.25, 0.75], dtype=torch.float64, device=s.device))
    return float((q[1] - q[0]) / 1.349)


def mp_threshold(s: torch.Tensor, m: int, n: int) -> float:
    """Marchenko–Pastur edge τ = σ̂ (1 + √β), β = min(m, n) / max(m, n)."""
    beta = min(m, n) / max(m, n)
    return sigma_hat(s) * (1.0 + math.sqrt(beta))


def snr(s: torch.Tensor, tau: float) -> float:
    """Σ s above τ over Σ s at or below τ; ∞ when no singular value is at or below τ."""
    s = s.to(torch.float64)
    noise = float(s[s <= tau].sum())
    signal = float(s[s > tau].sum())
    if noise == 0.0:
        return math.inf
    return signal / noise
