"""Per-matrix statistics against a float64 implementation of docs/methods.md (numpy), and the Gram
route against the SVD route."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from laserkit.spectral.mp import (
    gram_singular_values,
    matrix_stats,
    mp_threshold,
    sigma_hat,
    snr,
    svd_singular_values,
)

EPS = np.finfo(np.float64).eps


def reference(w: np.ndarray) -> dict:
    """docs/methods.md's MP rule written out: float64 SVD, numpy quantiles, no shared code."""
    w = w.astype(np.float64)
    m, n = w.shape
    s = np.linalg.svd(w, compute_uv=False)
    q25, q75 = np.quantile(s, [0.25, 0.75], method="linear")
    sig = (q75 - q25) / 1.349
    tau = sig * (1 + math.sqrt(min(m, n) / max(m, n)))
    above, below = s[s > tau].sum(), s[s <= tau].sum()
    ratio = math.inf if below == 0 else above / below
    p = s / s.sum()
    p = p[p > 0]
    return {
        "s": s,
        "sigma_hat": sig,
        "mp_threshold": tau,
        "n_above": int((s > tau).sum()),
        "snr": ratio,
        "snr_over_smax": ratio / s[0],
        "spectral_norm": s[0],
        "stable_rank": (w * w).sum() / s[0] ** 2,
        "effective_rank": math.exp(-(p * np.log(p)).sum()),
    }


def _random(m: int, n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g, dtype=dtype)


@pytest.mark.parametrize("shape", [(96, 40), (40, 96), (64, 64), (300, 7)])
@pytest.mark.parametrize("method", ["gram", "svd"])
def test_stats_equal_direct_float64_reference(shape, method):
    w = _random(*shape, seed=sum(shape))
    got = matrix_stats(w, method=method)
    ref = reference(w.numpy())
    np.testing.assert_allclose(got["s"].numpy(), ref["s"], rtol=1e-10, atol=1e-12 * ref["s"][0])
    assert got["n_above"] == ref["n_above"]
    for key in (
        "sigma_hat",
        "mp_threshold",
        "snr",
        "snr_over_smax",
        "spectral_norm",
        "stable_rank",
        "effective_rank",
    ):
        assert got[key] == pytest.approx(ref[key], rel=1e-10), key


def planted(m: int, n: int, signal: list[float], noise: np.ndarray, seed: int) -> np.ndarray:
    """U diag(signal ++ noise) Vᵀ with random orthonormal U, V: a matrix of known spectrum."""
    rng = np.random.default_rng(seed)
    k = min(m, n)
    u, _ = np.linalg.qr(rng.standard_normal((m, k)))
    v, _ = np.linalg.qr(rng.standard_normal((n, k)))
    s = np.concatenate([signal, noise])
    return (u * s) @ v.T


def test_mp_threshold_recovers_planted_rank():
    # A noise spectrum whose interquartile range is wide relative to its top (half the noise
    # directions near 0, half up to 1): τ = σ̂(1+√β) clears the whole noise bulk, so exactly the
    # planted directions are above it.
    m, n, rank = 240, 120, 6
    k = min(m, n)
    noise = np.concatenate(
        [
            np.linspace(0.01, 0.05, (k - rank) // 2),
            np.linspace(0.8, 1.0, k - rank - (k - rank) // 2),
        ]
    )
    w = planted(m, n, [40.0, 30.0, 20.0, 10.0, 5.0, 3.0], noise, seed=1)
    st = matrix_stats(torch.from_numpy(w).float())
    assert st["mp_threshold"] > 1.0  # above every noise singular value
    assert st["n_above"] == rank
    ref = reference(w.astype(np.float32))
    assert st["snr"] == pytest.approx(ref["snr"], rel=1e-9)


def test_gaussian_noise_planted_signal_is_above_threshold():
    # With i.i.d. Gaussian noise the IQR τ (docs/methods.md) lies inside the noise bulk, so more
    # than the planted rank passes; every planted direction does, and SNR grows with signal.
    g = torch.Generator().manual_seed(3)
    m, n, r = 400, 200, 5
    u, _ = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))
    noise = torch.randn(m, n, generator=g, dtype=torch.float64)
    snrs = []
    for strength in (5.0, 50.0):
        w = (u * strength * math.sqrt(m)) @ v.T + noise
        st = matrix_stats(w)
        assert st["s"][r - 1] > st["mp_threshold"]
        assert st["n_above"] >= r
        snrs.append(st["snr"])
    assert snrs[1] > 2 * snrs[0]


def test_gram_route_accuracy_where_it_matters():
    # Bulk over 3 decades (real weights: quartiles within ~1e-2 of s_max) plus a tail down to
    # 1e-8: the quartiles and those near τ keep < 1e-9 relative accuracy; the error grows as
    # ε·(s_max/s)², which is the documented limit of the route.
    m, n = 200, 80
    s_true = np.concatenate([np.logspace(0, -3, n - 10), np.logspace(-6, -8, 10)])
    w = planted(m, n, [], s_true, seed=2)
    gram = gram_singular_values(torch.from_numpy(w)).numpy()
    svd = svd_singular_values(torch.from_numpy(w)).numpy()
    rel = np.abs(gram - svd) / svd
    st = matrix_stats(torch.from_numpy(w))
    near_tau = np.argsort(np.abs(svd - st["mp_threshold"]))[:5]
    q = np.quantile(np.arange(n), [0.25, 0.75]).astype(int)
    important = np.unique(np.concatenate([near_tau, q, q + 1, [0]]))
    assert rel[important].max() < 1e-9
    bound = 50 * EPS * (svd[0] / svd) ** 2
    assert np.all(np.abs(gram - svd) / svd <= np.maximum(bound, 1e-12))
    # and where it loses: the smallest values (s/s_max = 1e-6) are off by far more than the SVD's
    assert rel[-1] > 1e-6
    ref = matrix_stats(torch.from_numpy(w), method="svd")
    assert st["n_above"] == ref["n_above"]
    for key in ("sigma_hat", "mp_threshold", "snr", "effective_rank", "stable_rank"):
        assert st[key] == pytest.approx(ref[key], rel=1e-8), key


def test_gram_chunks_do_not_change_the_result():
    w = _random(500, 30, seed=4)
    whole = gram_singular_values(w, chunk_bytes=1 << 30)
    tiny = gram_singular_values(w, chunk_bytes=8 * 30 * 7)  # 7 rows per chunk
    torch.testing.assert_close(whole, tiny, rtol=1e-12, atol=1e-12)


def test_edge_cases_give_nan_or_inf_with_a_reason():
    zero = matrix_stats(torch.zeros(8, 5))
    assert math.isnan(zero["snr"]) and math.isnan(zero["snr_over_smax"])
    assert "all-zero" in zero["note"]
    bad = torch.ones(6, 4)
    bad[2, 1] = float("nan")
    st = matrix_stats(bad)
    assert math.isnan(st["snr"]) and "NaN" in st["note"]
    # one dominant value and the rest equal: IQR = 0, τ = 0, nothing at or below τ → ∞
    s = torch.tensor([5.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    st = matrix_stats(s, 5, 9)
    assert st["mp_threshold"] == 0.0 and math.isinf(st["snr"]) and "∞" in st["note"]
    assert math.isnan(snr(torch.zeros(3), 0.0))
    with pytest.raises(ValueError):
        matrix_stats(s)  # singular values need m and n


def test_existing_helpers_keep_their_meaning():
    s = torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    q25, q75 = np.quantile(s.numpy(), [0.25, 0.75])
    assert sigma_hat(s) == pytest.approx((q75 - q25) / 1.349)
    assert mp_threshold(s, 4, 16) == pytest.approx(sigma_hat(s) * 1.5)
    assert snr(s, 2.5) == pytest.approx(7.0 / 3.0)
