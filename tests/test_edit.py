"""Interventions against direct formulas; apply / restore / compose on tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_tiny

from laserkit import Editor, FactorCache, Intervention, LaserkitError
from laserkit.interventions import compute, kept_rank, rho_from_rate
from laserkit.interventions.mp_threshold import mp_reduce
from laserkit.spectral.mp import mp_threshold, sigma_hat, snr


def _numpy_truncation(W: np.ndarray, k: int) -> np.ndarray:
    U, s, Vt = np.linalg.svd(W.astype(np.float64), full_matrices=False)
    return (U[:, :k] * s[:k]) @ Vt[:k]


@pytest.mark.parametrize("shape", [(48, 20), (20, 48), (33, 33)])
@pytest.mark.parametrize("rho", [1.0, 0.9, 0.5, 0.1, 0.05, 0.0])
def test_rank_reduction_matches_numpy(shape, rho):
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    out, info = compute(W.double(), Intervention(rho=rho))
    k = int(min(shape) * rho)  # the reference's do_low_rank: int(max_rank * k)
    assert info["rank"] == k
    np.testing.assert_allclose(out.numpy(), _numpy_truncation(W.numpy(), k), atol=1e-10)
    assert torch.linalg.matrix_rank(out) == k


def test_rate_and_rank_conventions():
    assert kept_rank(4096, 16384, rho_from_rate(9.9)) == 40  # docs/methods.md: 40 of 4096
    assert kept_rank(4096, 4096, rho_from_rate(10)) == 0
    assert kept_rank(100, 200, rho_from_rate(0)) == 100
    assert kept_rank(100, 100, 0.29) == 28  # int(28.999…), as the reference's do_low_rank
    for bad in (-0.1, 10.5):
        with pytest.raises(LaserkitError, match=r"outside \[0, 10\]"):
            rho_from_rate(bad)
    with pytest.raises(LaserkitError, match=r"outside \[0, 1\]"):
        Intervention(rho=1.5)
    with pytest.raises(LaserkitError, match="unknown intervention"):
        Intervention(kind="pca")


def _direct_mp(W: np.ndarray):
    s = np.linalg.svd(W.astype(np.float64), compute_uv=False)
    q25, q75 = np.percentile(s, [25, 75])  # linear interpolation, as torch.quantile
    sig = (q75 - q25) / 1.349
    m, n = W.shape
    tau = sig * (1 + np.sqrt(min(m, n) / max(m, n)))
    below = s[s <= tau].sum()
    return s, sig, tau, (np.inf if below == 0 else s[s > tau].sum() / below)


@pytest.mark.parametrize("shape", [(80, 30), (30, 80), (64, 64)])
def test_mp_statistics_match_direct_formulas(shape):
    W = np.random.default_rng(0).standard_normal(shape)
    s, sig, tau, ratio = _direct_mp(W)
    st = torch.from_numpy(s)
    assert sigma_hat(st) == pytest.approx(sig, rel=1e-12)
    assert mp_threshold(st, *shape) == pytest.approx(tau, rel=1e-12)
    assert snr(st, tau) == pytest.approx(ratio, rel=1e-12)
    assert snr(st, 0.0) == math.inf  # nothing at or below the threshold


def _with_spectrum(s: np.ndarray, m: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    V, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    return (U * s) @ V.T


def test_mp_threshold_recovers_planted_rank():
    """Signal of rank r well above a noise floor whose spread sets σ̂ is kept, the rest dropped.

    laserRMT's σ̂ comes from the quartiles of the singular values themselves, so it recovers a
    planted rank only when the noise spectrum is wide relative to its top (here: half the noise
    directions near 0.01, half near 1). On i.i.d. Gaussian noise it keeps far more than r (a
    200×120 Gaussian has 65 singular values above τ): that is the reference formula, not a bug.
    """
    m = n = 100
    r = 5
    rng = np.random.default_rng(1)
    noise = np.concatenate([rng.uniform(0.005, 0.015, 48), rng.uniform(0.9, 1.0, 47)])
    s = np.concatenate([rng.uniform(10, 20, r), noise])
    W = _with_spectrum(s, m, n, seed=2)
    out, k = mp_reduce(torch.from_numpy(W))
    assert k == r
    np.testing.assert_allclose(out.numpy(), _numpy_truncation(W, r), atol=1e-8)
    gaussian = torch.from_numpy(rng.standard_normal((200, 120)))
    assert mp_reduce(gaussian)[1] > 50


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "phi3"])
def test_restore_is_bit_exact(family):
    model = make_tiny(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ed = Editor(model)
    ed.apply("mlp", "all", Intervention(rho=0.1))
    ed.apply("attn", "0-1", Intervention(kind="mp-threshold"))
    ed.apply("fc_in", 0, Intervention(rho=0.5))  # the same matrix twice: composition
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    ed.restore()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not ed.edited and ed.records == []


def test_restore_to_mark_undoes_only_later_steps():
    model = make_tiny("llama")
    ed = Editor(model)
    ed.apply("fc_in", 3, Intervention(rho=0.1))
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    mark = ed.mark()
    ed.apply("fc_out", 3, Intervention(rho=0.1))
    ed.apply("fc_in", 3, Intervention(rho=0.0))
    ed.restore(to=mark)
    assert all(torch.equal(kept[k], v) for k, v in model.state_dict().items())
    assert [(r["lname"], r["layer"]) for r in ed.records] == [("fc_in", 3)]


def test_composition_of_edits_equals_sequential_direct_computation():
    model = make_tiny("llama")
    w_in = model.model.layers[2].mlp.gate_proj.weight.detach().double().numpy().copy()
    w_out = model.model.layers[5].mlp.down_proj.weight.detach().double().numpy().copy()
    ed = Editor(model)
    ed.apply("fc_in", 2, Intervention(rho=0.25))
    ed.apply("fc_out", 5, Intervention(rho=0.5))
    np.testing.assert_allclose(
        model.model.layers[2].mlp.gate_proj.weight.detach().numpy(),
        _numpy_truncation(w_in, 8),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        model.model.layers[5].mlp.down_proj.weight.detach().numpy(),
        _numpy_truncation(w_out, 16),
        atol=1e-5,
    )
    assert len(ed.records) == 2


def test_svd_is_computed_once_for_every_rho():
    model = make_tiny("llama")
    cache = FactorCache()
    ed = Editor(model, cache=cache)
    results = []
    for rho in (0.9, 0.8, 0.6, 0.2, 0.1, 0.05, 0.01):
        ed.apply("fc_in", 4, Intervention(rho=rho))
        results.append(model.model.layers[4].mlp.gate_proj.weight.detach().clone())
        ed.restore()
    assert (cache.misses, cache.hits) == (1, 6)
    fresh = Editor(make_tiny("llama"), cache=FactorCache())
    fresh.apply("fc_in", 4, Intervention(rho=0.2))
    assert torch.equal(fresh.model.model.layers[4].mlp.gate_proj.weight, results[3])


def test_deterministic_across_runs():
    outs = []
    for _ in range(2):
        model = make_tiny("gpt2")
        Editor(model).apply("mlp", "all", Intervention(rho=0.3))
        outs.append(model.state_dict())
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_low_precision_model_is_computed_in_float32():
    model = make_tiny("llama").to(torch.bfloat16)
    W = model.model.layers[0].mlp.gate_proj.weight.detach().float().numpy().copy()
    Editor(model).apply("fc_in", 0, Intervention(rho=0.5))
    got = model.model.layers[0].mlp.gate_proj.weight
    assert got.dtype == torch.bfloat16
    expected = torch.from_numpy(_numpy_truncation(W, 16)).float()
    # within bf16 rounding (2^-8 relative) of the float64 result: computed in float32, cast once
    assert torch.all((got.float() - expected).abs() <= 2**-8 * expected.abs() + 1e-7)


def test_dont_changes_nothing():
    model = make_tiny("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert Editor(model).apply("fc_in", "all", Intervention(kind="dont")) == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
