"""The opt-in Gavish–Donoho noise edge beside laserRMT's IQR σ̂, and MP reductions in float64.

References are independent of laserkit's code: the Marchenko–Pastur median by scipy's adaptive
quadrature and root finder (laserkit uses Gauss–Legendre and bisection), the published values of
ω(β), and numpy's float64 SVD for the reductions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize

from laserkit.core.errors import LaserkitError
from laserkit.interventions import Intervention, compute
from laserkit.interventions.mp_threshold import mp_reduce
from laserkit.spectral.mp import gd_omega, matrix_stats, mp_median, mp_threshold


def scipy_mp_median(beta: float) -> float:
    a, b = (1 - math.sqrt(beta)) ** 2, (1 + math.sqrt(beta)) ** 2

    def density(x: float) -> float:
        return math.sqrt(max((b - x) * (x - a), 0.0)) / (2 * math.pi * beta * x)

    def cdf_minus_half(x: float) -> float:
        return integrate.quad(density, a, x, limit=200)[0] - 0.5

    return optimize.brentq(cdf_minus_half, a + 1e-12, b - 1e-12, xtol=1e-14)


@pytest.mark.parametrize("beta", [0.05, 0.25, 0.5, 0.75, 1.0])
def test_mp_median_matches_adaptive_quadrature(beta):
    assert mp_median(beta) == pytest.approx(scipy_mp_median(beta), rel=1e-7)


def test_gd_omega_published_values():
    # Gavish & Donoho (2014): ω(1) = 2.858 for square matrices, and the cubic fit
    # ω(β) ≈ 0.56β³ − 0.95β² + 1.82β + 1.43, accurate to about 0.02 over (0, 1].
    assert gd_omega(1.0) == pytest.approx(2.858, abs=1e-3)
    for beta in np.linspace(0.05, 1.0, 20):
        fit = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
        assert abs(gd_omega(float(beta)) - fit) < 0.02, beta


def planted_gaussian(m: int, n: int, strengths: list[float], seed: int) -> np.ndarray:
    """Rank-r signal of given singular values (in units of the noise edge) plus N(0, 1) noise."""
    rng = np.random.default_rng(seed)
    r = len(strengths)
    u, _ = np.linalg.qr(rng.standard_normal((m, r)))
    v, _ = np.linalg.qr(rng.standard_normal((n, r)))
    edge = math.sqrt(max(m, n)) * (1 + math.sqrt(min(m, n) / max(m, n)))
    return (u * (np.array(strengths) * edge)) @ v.T + rng.standard_normal((m, n))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gavish_donoho_recovers_planted_rank_under_gaussian_noise(seed):
    w = planted_gaussian(400, 200, [3.0, 2.5, 2.0, 1.8, 1.6], seed)
    s = np.linalg.svd(w, compute_uv=False)
    gd = matrix_stats(torch.from_numpy(w), estimator="gavish-donoho")
    assert gd["n_above"] == 5
    # the threshold, written out: ω(β)·median(s) with numpy's median (mean of the middle two)
    assert gd["mp_threshold"] == pytest.approx(gd_omega(0.5) * np.median(s), rel=1e-12)
    # laserRMT's IQR σ̂ sits inside the noise bulk here: it keeps far more than the planted rank
    iqr = matrix_stats(torch.from_numpy(w))
    assert iqr["n_above"] > 50


def test_gavish_donoho_keeps_nothing_of_pure_noise():
    rng = np.random.default_rng(5)
    w = torch.from_numpy(rng.standard_normal((300, 300)))
    assert mp_reduce(w, estimator="gavish-donoho")[1] == 0
    assert mp_reduce(w)[1] > 50  # the reference formula on pure noise (73 of 300 here)


def test_mp_reduce_runs_in_float64_from_a_float32_weight():
    w = planted_gaussian(120, 80, [4.0, 3.0], seed=3).astype(np.float32)
    out, k = mp_reduce(torch.from_numpy(w), estimator="gavish-donoho")
    assert out.dtype == torch.float64 and k == 2
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    np.testing.assert_allclose(out.numpy(), (u[:, :k] * s[:k]) @ vt[:k], rtol=0, atol=1e-12)
    # float32 factors handed in are not used: the result is the float64 one, bit for bit
    f32 = torch.linalg.svd(torch.from_numpy(w), full_matrices=False)
    from laserkit.interventions import Factors

    again, _ = mp_reduce(torch.from_numpy(w), Factors(*f32), estimator="gavish-donoho")
    assert torch.equal(again, out)


def test_intervention_keys_and_errors():
    default = Intervention(kind="mp-threshold")
    assert "estimator" not in default.to_dict()  # earlier runs' trial keys keep their meaning
    gd = Intervention(kind="mp-threshold", estimator="gavish-donoho")
    assert gd.to_dict()["estimator"] == "gavish-donoho"
    assert Intervention.from_dict(gd.to_dict()) == gd
    assert gd.describe() == "mp-threshold(gavish-donoho)"
    assert "estimator" not in Intervention(kind="rank-reduction", rho=0.5).to_dict()
    with pytest.raises(LaserkitError, match="unknown noise estimator 'mad'.*iqr, gavish-donoho"):
        Intervention(kind="mp-threshold", estimator="mad")
    w = torch.from_numpy(planted_gaussian(60, 40, [3.0], seed=4))
    out, info = compute(w, gd)
    assert info["rank"] == 1
    assert mp_threshold(torch.linalg.svdvals(w), 60, 40, "gavish-donoho") > 0
