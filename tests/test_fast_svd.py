"""The top-k route (interventions/fast_svd.py) against an independent exact truncation: numpy's
float64 SVD of the same matrix, on tall, wide and square shapes and edge ranks, through both
routes (Gram and block Krylov), with the fallback to the full SVD on a tied k-th gap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny

from laserkit.core.errors import LaserkitError
from laserkit.edit.editor import Editor, FactorCache
from laserkit.interventions import Intervention, fast_svd
from laserkit.interventions.rank_reduction import Factors, kept_rank, rank_reduce

LASERKIT = str(Path(sys.executable).parent / "laserkit")


def weights(m: int, n: int, seed: int = 0, alpha: float = 0.5) -> torch.Tensor:
    """A float32 matrix whose spectrum decays like real weights' (power law), not a flat bulk."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = min(m, n), max(m, n)
    W = torch.randn(hi, lo, generator=g) / hi**0.5
    W = W * (1.0 + torch.arange(lo, dtype=torch.float32)) ** -alpha
    return W if m >= n else W.T.contiguous()


def exact(W: torch.Tensor, k: int) -> np.ndarray:
    """The exact rank-k truncation, float64, by numpy (not torch, not our code)."""
    U, S, Vh = np.linalg.svd(W.double().numpy(), full_matrices=False)
    return (U[:, :k] * S[:k]) @ Vh[:k]


def rel(out: torch.Tensor, ref: np.ndarray) -> float:
    norm = np.linalg.norm(ref)
    return float(np.linalg.norm(out.double().numpy() - ref) / (norm if norm else 1.0))


def float32_svd_error(W: torch.Tensor, k: int, ref: np.ndarray) -> float:
    """How far today's full float32 SVD lands from the exact truncation (the bar to meet)."""
    return rel(Factors.of(W).truncate(k), ref)


SHAPES = [(300, 120), (120, 300), (160, 160), (97, 41)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rho", [0.01, 0.1, 0.5, 0.99])
def test_gram_route_is_the_exact_truncation(shape, rho):
    W = weights(*shape, seed=sum(shape))
    k = kept_rank(*shape, rho)
    ref = exact(W, k)
    f = fast_svd._gram_route(W)
    out = f.truncate(k)
    assert out.shape == W.shape and out.dtype == W.dtype
    assert not f.fell_back
    assert rel(out, ref) <= max(1e-6, float32_svd_error(W, k, ref))
    assert rel(out, ref) < 1e-6


@pytest.mark.parametrize(
    "shape,k", [((500, 220), 1), ((500, 220), 8), ((220, 500), 8), ((300, 300), 10)]
)
def test_krylov_route_is_the_exact_truncation(shape, k):
    W = weights(*shape, seed=k)
    ref = exact(W, k)
    f = fast_svd._krylov_route(W, k, max_share=0.9)
    assert f is not None and f.method.startswith("krylov")
    assert f.edit_error_bound(k) <= fast_svd.TOL
    out = f.truncate(k)
    assert not f.fell_back
    assert rel(out, ref) < 1e-6
    assert rel(out, ref) <= float32_svd_error(W, k, ref)
    # one decomposition to k serves every smaller rank too
    for j in (1, k // 2):
        if j and f.edit_error_bound(j) <= fast_svd.TOL:
            assert rel(f.truncate(j), exact(W, j)) < 1e-6


def test_krylov_is_seeded():
    W = weights(700, 300)
    a = fast_svd._krylov_route(W, 6, max_share=0.9).truncate(6)
    b = fast_svd._krylov_route(W, 6, max_share=0.9).truncate(6)
    assert torch.equal(a, b)


def tied(m: int, n: int, k: int) -> torch.Tensor:
    """float64 W = Q₁ diag(s) Q₂ᵀ with s_k = s_{k+1} exactly: the rank-k truncation is not
    unique, no top-k solver can resolve it."""
    g = torch.Generator().manual_seed(3)
    Q1 = torch.linalg.qr(torch.randn(m, n, generator=g, dtype=torch.float64)).Q
    Q2 = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q
    s = torch.linspace(10.0, 1.0, n, dtype=torch.float64)
    s[k] = s[k - 1]
    return (Q1 * s) @ Q2.T


def test_tied_gap_falls_back_to_the_full_svd():
    W = tied(240, 100, 10)
    f = fast_svd._gram_route(W)
    assert f.edit_error_bound(10) > fast_svd.TOL  # the check sees the unresolved gap
    assert f.edit_error_bound(9) <= fast_svd.TOL and f.edit_error_bound(11) <= fast_svd.TOL
    out = f.truncate(10)
    assert f.fell_back
    assert torch.equal(out, Factors.of(W).truncate(10))  # exactly the full SVD's edit
    assert fast_svd._krylov_route(W, 10, max_share=0.9) is None  # never resolves, gives up


def test_untied_neighbour_ranks_do_not_fall_back():
    W = tied(240, 100, 10)
    f = fast_svd._gram_route(W)
    f.truncate(9)
    f.truncate(11)
    assert not f.fell_back


def test_choose_by_shape_and_k():
    assert fast_svd.choose((576, 1536), 5) == "gram"  # small side: Gram is cheapest
    assert fast_svd.choose((14336, 4096), 40) == "krylov"  # ρ = 0.01 on a 7B MLP matrix
    assert fast_svd.choose((14336, 4096), 3686) == "gram"  # ρ = 0.9: most of the spectrum


def test_rank_reduce_defaults_to_the_top_k_route(monkeypatch):
    monkeypatch.setattr(fast_svd, "GRAM_SIDE", 100)  # let a small matrix take the Krylov route
    W = weights(1200, 500, seed=7)
    for rho in (0.01, 0.02):
        k = kept_rank(*W.shape, rho)
        assert rel(rank_reduce(W, rho), exact(W, k)) < 1e-6
    assert torch.equal(rank_reduce(W, 1.0), W)
    assert torch.count_nonzero(rank_reduce(W, 0.0)) == 0


def test_factor_cache_decomposes_once_for_every_rho():
    W = weights(400, 160, seed=2)
    cache = FactorCache(rho_hint=0.5)
    outs = {}
    for rho in (0.01, 0.05, 0.2, 0.5):
        k = kept_rank(*W.shape, rho)
        outs[rho] = cache.get(("w",), W, k).truncate(k)
    assert cache.misses == 1 and cache.hits == 3
    for rho, out in outs.items():
        assert rel(out, exact(W, kept_rank(*W.shape, rho))) < 1e-6


def test_factor_cache_redecomposes_for_a_larger_rank(monkeypatch):
    monkeypatch.setattr(fast_svd, "GRAM_SIDE", 100)
    W = weights(1000, 400, seed=4)
    cache = FactorCache()
    small = cache.get(("w",), W, 4)
    assert small.kmax >= 4 and small.method.startswith("krylov")
    big = cache.get(("w",), W, 12)
    assert big.kmax >= 12 and cache.misses == 2
    assert cache.get(("w",), W, 8) is big and cache.hits == 1


def test_editor_restores_bit_exactly_after_fast_edits():
    model = make_tiny("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ed = Editor(model)
    recs = ed.apply("fc_in", -1, Intervention(rho=0.1))
    assert recs and all(r["rank"] == kept_rank(*r["shape"], 0.1) for r in recs)
    edited = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(edited) == len(recs)
    ed.restore()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_methods_give_the_same_edit_or_say_they_differ():
    W = weights(300, 200, seed=5)
    k = kept_rank(*W.shape, 0.05)
    ref = exact(W, k)
    fast, _ = Intervention(rho=0.05).compute(W)
    full, _ = Intervention(rho=0.05, svd_method="full").compute(W)
    low, _ = Intervention(rho=0.05, svd_method="lowrank-niter2").compute(W)
    low2, _ = Intervention(rho=0.05, svd_method="lowrank-niter2").compute(W)
    assert rel(fast, ref) < 1e-6 and rel(full, ref) < 1e-5
    assert torch.equal(low, low2)  # seeded
    assert rel(low, ref) > 1e-3  # the reference's randomized route is not the truncation


def test_svd_method_is_recorded_only_when_not_the_default():
    assert "svd_method" not in Intervention(rho=0.1).to_dict()
    d = Intervention(rho=0.1, svd_method="lowrank-niter2").to_dict()
    assert d["svd_method"] == "lowrank-niter2"
    assert Intervention.from_dict(d) == Intervention(rho=0.1, svd_method="lowrank-niter2")
    assert "svd_method=lowrank-niter2" in Intervention(**d).describe()
    with pytest.raises(LaserkitError, match="unknown --svd"):
        Intervention(rho=0.1, svd_method="randomized")


def test_cli_refuses_an_unknown_svd_method(tmp_path):
    p = subprocess.run(
        [
            LASERKIT,
            "reduce",
            "nowhere",
            "--lname",
            "fc_in",
            "--lnum",
            "1",
            "--rho",
            "0.1",
            "--svd",
            "bogus",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("laserkit: error:") and "--svd" in lines[0]


def test_search_decomposes_to_the_grids_largest_rho():
    from laserkit.search.runner import largest_rho

    edits = [{"intervention": {"kind": "rank-reduction", "rho": r}} for r in (0.01, 0.2, 0.05)]
    assert largest_rho(edits) == 0.2
    assert largest_rho([{"intervention": {"kind": "mp-threshold", "rho": None}}]) is None
