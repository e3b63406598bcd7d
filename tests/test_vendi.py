"""Vendi-score pruning: the fast greedy path against the direct definition (tests/direct_vendi.py),
the score formula against SPEC's naive one, the rebuild, ties, and the Editor path."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import make_tiny
from direct_vendi import direct_log_score, direct_select

from laserkit.edit import Editor
from laserkit.interventions import Intervention
from laserkit.interventions.vendi import (
    _arrow_eigenvalues,
    _excess,
    _power_sum_excess,
    log_vendi,
    vendi_reconstruct,
    vendi_reduce,
    vendi_select,
)


def _random(seed: int, scale: float = 0.3) -> tuple[torch.Tensor, int]:
    g = torch.Generator().manual_seed(seed)
    m = int(torch.randint(20, 45, (1,), generator=g))
    n = int(torch.randint(5, 30, (1,), generator=g))
    r = int(torch.randint(1, 9, (1,), generator=g))
    return torch.randn(m, n, generator=g, dtype=torch.float64) * scale, r


@pytest.mark.parametrize(("use_quality", "min_diversity"),
                         list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize(("q", "bandwidth"), [(1.0, 1.0), (2.0, 1.0), (0.5, 1.0), (1.0, 0.7)])
def test_fast_matches_direct(use_quality: bool, min_diversity: bool, q: float,
                             bandwidth: float) -> None:
    # scale 0.9: rows far apart under the kernel (K near I): power sums; 0.3/0.1: eigensolves
    for seed, scale in [(0, 0.3), (1, 0.3), (2, 0.1), (3, 0.9), (4, 0.9)]:
        W, r = _random(seed + int(10 * q) + int(bandwidth * 100), scale)
        kw = dict(use_quality=use_quality, min_diversity=min_diversity, q=q, bandwidth=bandwidth)
        fast_idx, fast_score = vendi_select(W, r, **kw)
        ref_idx, ref_score = direct_select(W, r, **kw)
        assert fast_idx == ref_idx
        assert fast_score == pytest.approx(ref_score, rel=1e-9)
        # the returned score is the chosen set's own score
        own = math.exp(direct_log_score(W.numpy(), fast_idx, use_quality=use_quality, q=q,
                                        bandwidth=bandwidth))
        assert fast_score == pytest.approx(own, rel=1e-9)


@pytest.mark.parametrize("q", [1.0, 2.0, 0.5, math.inf])
def test_log_vendi_is_spec_formula(q: float) -> None:
    g = torch.Generator().manual_seed(3)
    X = torch.randn(12, 6, generator=g, dtype=torch.float64) * 0.5
    K = torch.exp(-torch.cdist(X, X) ** 2 / 2)
    nu = torch.linalg.eigvalsh(K / 12).clamp_min(0)
    if q == 1.0:
        naive = -(nu * torch.log(nu)).sum()
    elif math.isinf(q):
        naive = -torch.log(nu.max())
    else:
        naive = torch.log((nu**q).sum()) / (1 - q)
    eps = torch.linalg.eigvalsh(K - torch.eye(12, dtype=torch.float64))
    assert float(log_vendi(eps, q)) == pytest.approx(float(naive), rel=1e-12)


def test_arrow_eigenvalues_are_bordered_eigenvalues() -> None:
    """E's eigenbasis turns [[E, b], [bᵀ, 0]] into an arrow with the same spectrum."""
    g = torch.Generator().manual_seed(4)
    for scale, k in [(1.0, 6), (1e-6, 15), (0.3, 30)]:
        E = torch.randn(k, k, generator=g, dtype=torch.float64) * scale
        E = E + E.T
        E.fill_diagonal_(0)
        b = torch.randn(40, k, generator=g, dtype=torch.float64) * scale
        b[::3] = 0  # a candidate unrelated to the set: deflation
        lam, Q = torch.linalg.eigh(E)
        got = _arrow_eigenvalues(lam, b @ Q)
        A = torch.zeros(40, k + 1, k + 1, dtype=torch.float64)
        A[:, :k, :k] = E
        A[:, :k, k] = b
        A[:, k, :k] = b
        ref = torch.linalg.eigvalsh(A)
        assert torch.allclose(got, ref, rtol=0, atol=1e-13 * scale)


@pytest.mark.parametrize("q", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("scale", [1e-7, 1e-3, 0.02])
def test_power_sums_equal_eigenvalue_sums(q: float, scale: float) -> None:
    """The eigenvalue-free score of small-radius arrows equals Σ excess(eigenvalues)."""
    g = torch.Generator().manual_seed(7)
    k = 12
    lam = torch.randn(k, generator=g, dtype=torch.float64) * scale
    z = torch.randn(30, k, generator=g, dtype=torch.float64) * scale
    ref = _excess(_arrow_eigenvalues(lam, z), q).sum(1)
    got = _power_sum_excess(lam, z, q, terms=30)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=0)


def test_min_diversity_runs_and_differs() -> None:
    W, _ = _random(5)
    most, s_most = vendi_select(W, 5)
    least, s_least = vendi_select(W, 5, min_diversity=True)
    assert len(least) == 5 and s_least < s_most and most != least


def test_ties_pick_lowest_index() -> None:
    g = torch.Generator().manual_seed(6)
    base = torch.randn(4, 8, generator=g, dtype=torch.float64)
    W = torch.cat([base, base])  # rows 4..7 duplicate rows 0..3
    idx, _ = vendi_select(W, 4)
    assert idx[0] == 0 and all(i < 4 for i in idx)
    # the most similar pick is a duplicate of row 0: the first one, row 4
    least, _ = vendi_select(W, 2, min_diversity=True)
    assert least == [0, 4]
    assert direct_select(W, 2, min_diversity=True)[0] == least


def test_reconstruct_is_least_squares_projection() -> None:
    W, _ = _random(7)
    idx = [3, 0, 11, 5]
    got = vendi_reconstruct(W, idx).numpy()
    B = W.numpy()[idx]
    coef, *_ = np.linalg.lstsq(B.T, W.numpy().T, rcond=None)
    np.testing.assert_allclose(got, (B.T @ coef).T, atol=1e-10)
    assert np.linalg.matrix_rank(got, tol=1e-8) <= len(idx)
    np.testing.assert_allclose(got[idx], B, atol=1e-10)  # selected rows are kept as they are


def test_reduce_edge_cases_keep_dtype() -> None:
    W = torch.randn(10, 6, dtype=torch.float32)
    zero, info = vendi_reduce(W, 0.0)
    assert zero.dtype == W.dtype and not zero.any() and info["selected"] == []
    out, info = vendi_reduce(W, 0.5)
    assert out.dtype == torch.float32 and len(info["selected"]) == 3
    assert np.linalg.matrix_rank(out.numpy(), tol=1e-4) <= 3


def test_editor_changes_only_that_matrix_and_restores() -> None:
    model = make_tiny("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ed = Editor(model)
    recs = ed.apply("fc_in", 0, Intervention(kind="vendi-score", rho=0.2))
    (target,) = ed.targets("fc_in", 0)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {target.param}
    assert len(recs[0]["selected"]) == recs[0]["rank"] == 6  # ⌊0.2·min(64, 32)⌋
    ed.restore()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
