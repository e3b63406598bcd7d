"""Vendi-score pruning: the fast exact greedy against an independent exact reference (mpmath, 40
digits: tests/direct_vendi.py) and the plain float64 greedy, the bounds it prunes with, the score
formula against the naive one, the median bandwidth, the near-identity warning, prefix reuse,
the rebuild, ties, the Editor path and the CLI option."""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import subprocess
import sys

import mpmath
import numpy as np
import pytest
import torch
from conftest import make_tiny
from direct_vendi import direct_select, exact_bandwidth, exact_select
from scipy.spatial.distance import pdist

from laserkit.core.errors import LaserkitError
from laserkit.edit.editor import Editor
from laserkit.interventions import Intervention
from laserkit.interventions import median_distance as M
from laserkit.interventions import vendi as V
from laserkit.interventions.vendi import (
    _excess,
    _t_bounds,
    _t_bounds_cheap,
    log_vendi,
    median_bandwidth,
    vendi_reconstruct,
    vendi_reduce,
    vendi_select,
)

pytestmark = pytest.mark.usefixtures("one_thread")
GATE = "model.layers.29.mlp.gate_proj.weight"


@pytest.fixture(autouse=True)
def _fresh_cache():
    V._cache.clear()
    yield
    V._cache.clear()


@pytest.fixture(scope="module")
def real_rows(default_model_dir) -> torch.Tensor:
    """The default model's last gate_proj (1536 × 576), read straight from safetensors."""
    from safetensors import safe_open

    for f in sorted(default_model_dir.glob("*.safetensors")):
        with safe_open(f, "pt") as h:
            if GATE in h.keys():  # noqa: SIM118 - safe_open has no __contains__
                return h.get_tensor(GATE).to(torch.float64)
    raise AssertionError(f"{GATE} not in {default_model_dir}")


def _random(seed: int, m: int = 20, n: int = 12, scale: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g, dtype=torch.float64) * scale


def _check_against_exact(W: torch.Tensor, r: int, **kw) -> None:
    """The fast greedy's picks, step by step along its own path, against the exact scores of every
    candidate: each pick is the exact best (lowest index among exact ties), and the tie window
    the fast path reported is tiny next to the score (a tolerance cannot hide a wrong pick)."""
    sigma = float(exact_bandwidth(W.numpy(), kw.get("bandwidth", 1.0)))
    state = V._Greedy(
        W.to(torch.float64),
        sigma,
        kw.get("use_quality", False),
        kw.get("min_diversity", False),
        1.0,
    )
    for _ in range(r):
        state.step()
    picks = state.chosen
    _, tables = exact_select(W, r, follow=picks, **kw)
    for i, (c, table) in enumerate(zip(picks, tables, strict=True)):
        best = (min if kw.get("min_diversity") else max)(table.values())
        tol = 10.0**-30
        exact_best = min(k for k, s in table.items() if abs(s - best) <= tol)
        assert c == exact_best, (i, c, exact_best, float(table[c] - best))
        assert state.windows[i] <= 1e-12 * max(1.0, abs(float(best)))
        # the score the fast path keeps is the chosen set's own score
        assert state.scores[i] == pytest.approx(float(table[c]), rel=1e-10, abs=1e-13)


@pytest.mark.parametrize(
    ("use_quality", "min_diversity"), list(itertools.product([False, True], repeat=2))
)
@pytest.mark.parametrize("bandwidth", [1.0, 2.0, "median"])
def test_fast_equals_exact_on_random_rows(
    use_quality: bool, min_diversity: bool, bandwidth
) -> None:
    # scale 0.9: rows far apart (K near I at bandwidth 1); 0.3: an informative kernel
    for seed, scale in [(1, 0.3), (2, 0.9)]:
        W = _random(seed, scale=scale)
        _check_against_exact(
            W, 5, use_quality=use_quality, min_diversity=min_diversity, bandwidth=bandwidth
        )


@pytest.mark.parametrize(
    ("use_quality", "min_diversity"), list(itertools.product([False, True], repeat=2))
)
@pytest.mark.parametrize("bandwidth", [1.0, 2.0, "median"])
def test_fast_equals_exact_on_real_rows(
    real_rows, use_quality: bool, min_diversity: bool, bandwidth
) -> None:
    """Rows of the real default model (norms ≈ 4.1, median ‖x−y‖² ≈ 33): at bandwidth 1 the
    kernel's off-diagonal is ~1e-8 and the candidates' scores differ far below 1e-10 (the old
    absolute tie tolerance); the fast path must still pick the exact best."""
    W = real_rows[torch.arange(0, 1536, 64)]  # 24 rows spread over the matrix
    _check_against_exact(
        W, 5, use_quality=use_quality, min_diversity=min_diversity, bandwidth=bandwidth
    )


@pytest.mark.parametrize("use_quality", [False, True])
@pytest.mark.parametrize("bandwidth", [2.0, "median"])
def test_lazy_rows_keep_the_exact_picks(
    real_rows, monkeypatch, use_quality: bool, bandwidth
) -> None:
    """A guess of 3 rows per step (of 24): at bandwidth 2 the remembered bounds rule out the
    other rows in some steps, at `median` on so few rows in none (every step then takes the
    fallback over all rows); every pick is still the exact best."""
    monkeypatch.setattr(V, "LAZY_ROWS", 3)
    outcomes: list[bool] = []
    narrow = V._Greedy._narrow

    def spy(self, Q, kappa, dk, rows, lq, lq_err, rest_hi):
        found = narrow(self, Q, kappa, dk, rows, lq, lq_err, rest_hi)
        if rest_hi > -math.inf:
            outcomes.append(found is not None)
        return found

    monkeypatch.setattr(V._Greedy, "_narrow", spy)
    W = real_rows[torch.arange(0, 1536, 64)]
    _check_against_exact(W, 6, use_quality=use_quality, bandwidth=bandwidth)
    assert outcomes and (any(outcomes) or bandwidth == "median")


@pytest.mark.parametrize("min_diversity", [False, True])
@pytest.mark.parametrize("bandwidth", [2.0, "median"])
def test_torch_steps_equal_exact(real_rows, monkeypatch, min_diversity: bool, bandwidth) -> None:
    """The step's filtering in torch (what other devices run; the CPU runs it in numpy) picks
    the exact best too, bounds in torch included."""
    monkeypatch.setattr(V, "NUMPY_STEPS", False)
    monkeypatch.setattr(V, "_t_bounds", V._t_bounds_torch)
    monkeypatch.setattr(V, "_t_bounds_cheap", V._t_bounds_cheap_torch)
    W = real_rows[torch.arange(0, 1536, 64)]
    _check_against_exact(W, 5, min_diversity=min_diversity, bandwidth=bandwidth)
    _check_against_exact(_random(1, scale=0.3), 5, min_diversity=min_diversity, bandwidth=bandwidth)


@pytest.mark.parametrize("numpy_steps", [True, False])
@pytest.mark.parametrize("bandwidth", [2.0, "median"])
def test_columns_computed_ahead_are_the_columns(
    real_rows, monkeypatch, bandwidth, numpy_steps: bool
) -> None:
    """A pick's kernel column comes with those of the likely next picks (`_next_picks`): the
    picks and every column equal those of one product per pick, and far fewer products run,
    with the steps in numpy (the CPU) and in torch (other devices)."""
    monkeypatch.setattr(V, "NUMPY_STEPS", numpy_steps)
    W = real_rows[:400].double()
    sigma = V.resolve_bandwidth(W, bandwidth)
    products = []
    columns = V._Kernel.columns
    monkeypatch.setattr(
        V._Kernel, "columns", lambda self, cols: products.append(len(cols)) or columns(self, cols)
    )
    runs = {}
    for ahead in (0, V.AHEAD):
        monkeypatch.setattr(V, "AHEAD", ahead)
        products.clear()
        state = V._Greedy(W, sigma, False, False, 1.0)
        while len(state.chosen) < 24:
            state.step()
        runs[ahead] = (list(state.chosen), state.B[:, :24].clone(), len(products))
    (picks0, B0, n0), (picks, B, n) = runs[0], runs[V.AHEAD]
    assert picks == picks0 and n0 == 24
    assert n <= 8, n  # the next pick was among the rows computed ahead at nearly every step
    torch.testing.assert_close(B, B0, rtol=1e-13, atol=0)
    assert torch.equal(B[picks, torch.arange(24)], torch.ones(24, dtype=torch.float64))


@pytest.mark.parametrize("q", [2.0, 0.5, math.inf])
def test_other_orders_equal_exact(q: float) -> None:
    W = _random(11, scale=0.3)
    fast, _ = vendi_select(W, 5, q=q)
    assert fast == exact_select(W, 5, q=q)[0]


@pytest.mark.parametrize("bandwidth", [2.0, "median"])
def test_fast_equals_plain_float64_greedy_at_real_size(real_rows, bandwidth) -> None:
    W = real_rows[:400]
    fast, _ = vendi_select(W, 12, bandwidth=bandwidth)
    assert fast == direct_select(W, 12, bandwidth=bandwidth)
    assert fast[:5] != list(range(5))  # the informative kernel does not keep the first rows


def _mp_t(K: np.ndarray) -> mpmath.mpf:
    """tr K log K at 40 digits (K given exactly in float64)."""
    ev = mpmath.eigsy(mpmath.matrix(K.tolist()), eigvals_only=True)
    return mpmath.fsum(v * mpmath.log(v) for v in ev if v > 0)


def test_bounds_bracket_the_exact_increment() -> None:
    """ΔT(c) = tr f(K_{S∪c}) − tr f(K_S), f = x log x (exact, mpmath), lies between the certified
    bounds, for well-conditioned, nearly singular and nearly identity kernels."""
    g = torch.Generator().manual_seed(5)
    for scale, k in [(0.3, 6), (0.05, 8), (2.0, 10)]:
        X = torch.randn(24, 7, generator=g, dtype=torch.float64) * scale
        K = torch.exp(-(torch.cdist(X, X) ** 2) / 2)
        K.fill_diagonal_(1.0)
        K = (K + K.T) / 2
        lam, Q = torch.linalg.eigh(K[:k, :k] - torch.eye(k, dtype=torch.float64))
        Z = K[k:, :k] @ Q
        with mpmath.workdps(40):
            t0 = _mp_t(K[:k, :k].numpy())
            exact = [
                float(_mp_t(K[[*range(k), c]][:, [*range(k), c]].numpy()) - t0)
                for c in range(k, len(X))
            ]
        exact = torch.tensor(exact, dtype=torch.float64)
        dk = 64 * k * 2.2e-16 * float(lam.abs().max() + 1)
        for ratio in (3.0, *V._GRID_RATIOS):
            lb, ub = _t_bounds(1 + lam, Z * Z, dk, 1e-15, k, ratio)
            assert bool((lb <= exact).all()) and bool((exact <= ub).all()), (scale, ratio)
            # fourth order: the relative width falls ~16-fold per halving of log(ratio); the
            # midpoint/trapezoid pair gave 1.2e-2 at 1.25, this rule 3.4e-5
            width = float(((ub - lb) / exact).median())
            assert width < {3.0: 0.05, 2.0: 5e-3, 1.25: 1e-4}[ratio], (scale, ratio, width)
        cheap = _t_bounds_cheap(1 + lam, Z * Z, dk, 1e-15, k)
        if cheap is not None:
            assert bool((cheap[0] <= exact).all()) and bool((exact <= cheap[1]).all())


def test_numpy_bounds_are_the_torch_bounds() -> None:
    """On the CPU the bounds run in numpy (less per-call overhead); the torch formulas serve
    other devices. Both are the same operations: they agree to rounding, infinite and None in
    the same places, on well-conditioned, nearly singular (κ_min = 0) and large-ψ inputs."""
    g = torch.Generator().manual_seed(11)
    for t in range(60):
        k = 1 + t % 37
        kappa = torch.rand(k, generator=g, dtype=torch.float64) * 3 + (0.0 if t % 3 == 0 else 1e-3)
        Z2 = torch.rand(20, k, generator=g, dtype=torch.float64) ** 3 * (5.0 if t % 2 else 0.3)
        dk, db = 1e-12 * (t % 4), 1e-13
        pairs = [
            (V._t_bounds_torch(kappa, Z2, dk, db, k, r), _t_bounds(kappa, Z2, dk, db, k, r))
            for r in (3.0, *V._GRID_RATIOS)
        ]
        cheap_t = V._t_bounds_cheap_torch(kappa, Z2, dk, db, k)
        cheap_n = _t_bounds_cheap(kappa, Z2, dk, db, k)
        assert (cheap_t is None) == (cheap_n is None)
        if cheap_t is not None:
            pairs.append((cheap_t, cheap_n))
        for ref, got in pairs:
            for a, b in zip(ref, got, strict=True):
                assert b.dtype == torch.float64
                assert torch.equal(torch.isinf(a), torch.isinf(b))
                fin = torch.isfinite(a)
                assert torch.allclose(a[fin], b[fin], rtol=1e-13, atol=0)


@pytest.mark.parametrize("q", [1.0, 2.0, 0.5, math.inf])
def test_log_vendi_is_spec_formula(q: float) -> None:
    X = _random(3, 12, 6, 0.5)
    K = torch.exp(-(torch.cdist(X, X) ** 2) / 2)
    nu = torch.linalg.eigvalsh(K / 12).clamp_min(0)
    if q == 1.0:
        naive = -(nu * torch.log(nu)).sum()
    elif math.isinf(q):
        naive = -torch.log(nu.max())
    else:
        naive = torch.log((nu**q).sum()) / (1 - q)
    eps = torch.linalg.eigvalsh(K - torch.eye(12, dtype=torch.float64))
    assert float(log_vendi(eps, q)) == pytest.approx(float(naive), rel=1e-12)


def test_excess_keeps_relative_precision() -> None:
    eps = torch.tensor([1e-9, -3e-6, 5e-3, 0.2, -0.7], dtype=torch.float64)
    with mpmath.workdps(40):
        ref = [
            float((1 + mpmath.mpf(e)) * mpmath.log1p(mpmath.mpf(e)) - mpmath.mpf(e))
            for e in eps.tolist()
        ]
    np.testing.assert_allclose(_excess(eps, 1.0).numpy(), ref, rtol=1e-14)


def test_median_bandwidth_definition() -> None:
    W = _random(4, 31, 9)
    assert median_bandwidth(W) == pytest.approx(float(np.median(pdist(W.numpy()))), rel=1e-12)
    # above MEDIAN_ROWS rows: a seeded sample, the same on every call
    big = _random(5, M.MEDIAN_ROWS + 300, 4)
    a, b = median_bandwidth(big), median_bandwidth(big.clone())
    idx = torch.randperm(len(big), generator=torch.Generator().manual_seed(0))[: M.MEDIAN_ROWS]
    assert (
        a == b == pytest.approx(float(np.median(pdist(big[idx.sort().values].numpy()))), rel=1e-12)
    )
    with pytest.raises(LaserkitError, match="bandwidth"):
        Intervention(kind="vendi-score", rho=0.1, bandwidth="wide")
    with pytest.raises(LaserkitError, match="bandwidth"):
        Intervention(kind="vendi-score", rho=0.1, bandwidth=-1.0)


def _median_cases() -> list[tuple[str, np.ndarray]]:
    """Rows whose pair counts are even and odd, with repeated rows and zero distances."""
    g = np.random.default_rng(12)
    line = np.array([[0.0], [1.0], [3.0], [7.0]])  # 6 pairs: middle distances 3 and 4
    base = g.standard_normal((7, 5))
    return [
        ("4 rows, 6 pairs, far-apart middle values", line),
        ("5 rows, 10 pairs", np.vstack([line, [[15.0]]])),
        ("6 rows, 15 pairs", g.standard_normal((6, 3))),
        ("7 rows, 21 pairs", base),
        ("8 rows, 28 pairs, one repeated", np.vstack([base, base[2:3]])),
        ("9 rows, 36 pairs, two repeated twice", np.vstack([base, base[[1, 1]]])),
        ("10 rows, 45 pairs, three pairs of duplicates", np.vstack([base, base[:3]]) * 3.0),
        ("11 rows: 45 of 55 distances zero", np.vstack([np.zeros((10, 4)), np.ones((1, 4))])),
        ("6 rows: 7 of 15 distances zero, the middle one 1", np.array([[0.0]] * 4 + [[1.0]] * 2)),
        ("4 rows: 3 of 6 distances zero, the two middle 0 and 1", np.array([[0.0]] * 3 + [[1.0]])),
    ]


@pytest.mark.parametrize("route", ["filtered", "missed bracket", "all pairs", "float32"])
def test_median_distance_is_numpys_median_of_pdist(monkeypatch, route: str) -> None:
    """Even counts of pairs take the mean of the two middle distances (not the root of the
    mean of their squares), duplicates give exact zeros; the windowed route, its exact
    selections when the sample's bracket misses, the all-pairs fallback and the float32 Gram
    form (rows that are float32 numbers) all agree with numpy's median of scipy's pdist."""
    if route == "all pairs":
        monkeypatch.setattr(M, "_median_filtered", lambda *a, **k: None)
    if route == "missed bracket":  # a bracket below every value: the window must still be found
        monkeypatch.setattr(M, "_bracket", lambda d, lo, hi, margin, p: (-2.0, -1.0))
        monkeypatch.setattr(torch, "cdist", None)  # and the all-pairs route is not taken
    decided = []
    if route == "float32":  # which dtype's Gram form each median was decided on
        filtered = M._median_filtered
        monkeypatch.setattr(
            M,
            "_median_filtered",
            lambda Y, sq, D, **k: decided.append(D.dtype) or filtered(Y, sq, D, **k),
        )
    for label, rows in _median_cases():
        if route == "float32":
            rows = rows.astype(np.float32).astype(np.float64)
        ref = float(np.median(pdist(rows)))
        W = torch.from_numpy(rows)
        decided.clear()
        got = M.median_distance(W)
        if route == "float32":
            assert decided == [torch.float32], label  # no float64 route after it
        assert got == pytest.approx(ref, rel=1e-14, abs=0.0), label
        if ref == 0.0:
            with pytest.raises(LaserkitError, match="median distance 0"):
                median_bandwidth(W)
        else:
            assert median_bandwidth(W) == got
    assert M.median_distance(torch.from_numpy(_median_cases()[0][1])) == 3.5  # (3 + 4)/2


def test_median_bracket_sample_visits_every_column() -> None:
    """1,024 rows of spread norms: the stride sample must bracket the middle ranks (a stride
    of 32 saw 32 columns only and missed them, sending the median to its slow route)."""
    g = torch.Generator().manual_seed(15)
    Y = torch.randn(1024, 16, generator=g, dtype=torch.float64)
    Y *= torch.exp(0.5 * torch.randn(1024, 1, generator=g, dtype=torch.float64))
    d = M.upper_sq(Y).reshape(-1)
    lo, hi = M._middle_ranks(1024 * 1023 // 2)
    a, b = M._bracket(d, lo, hi, 0.012, 1024)
    assert int((d < a).sum()) <= lo and int((d <= b).sum()) > hi
    assert M.median_distance(Y) == pytest.approx(float(np.median(pdist(Y.numpy()))), rel=1e-14)


def test_float32_gram_route_only_where_its_bound_holds(monkeypatch) -> None:
    """The float32 Gram form decides the median only for rows that are float32 numbers, with
    float32 products at full precision; float64 rows that are not, and a process that allows
    TF32/bfloat16 products, take the float64 route; a float32 decision that would need too
    many difference-form values gives way to it. Every route gives numpy's median of pdist."""
    decided: list[torch.dtype] = []
    filtered = M._median_filtered
    monkeypatch.setattr(
        M,
        "_median_filtered",
        lambda Y, sq, D, **k: decided.append(D.dtype) or filtered(Y, sq, D, **k),
    )
    g = torch.Generator().manual_seed(21)
    W32 = torch.randn(300, 48, generator=g) * torch.exp(torch.randn(300, 1, generator=g) / 3)
    ref = float(np.median(pdist(W32.double().numpy())))
    for W, want in [
        (W32, [torch.float32]),
        (W32.to(torch.bfloat16), [torch.float32]),
        (W32.double(), [torch.float32]),  # float64 storage of float32 numbers
        (W32.double() + 1e-9, [torch.float64]),
    ]:
        decided.clear()
        got = M.median_distance(W)
        assert decided == want, W.dtype
        exact = float(np.median(pdist(W.double().numpy())))
        assert got == pytest.approx(exact, rel=1e-14, abs=0.0)
    assert M.median_distance(W32) == pytest.approx(ref, rel=1e-14, abs=0.0)
    decided.clear()
    with monkeypatch.context() as mp:
        mp.setattr(torch, "get_float32_matmul_precision", lambda: "high")
        assert M.median_distance(W32) == pytest.approx(ref, rel=1e-14, abs=0.0)
    assert decided == [torch.float64]
    decided.clear()
    monkeypatch.setattr(M, "NEAR_SHARE", 300 * 300)  # at most one pair's difference
    monkeypatch.setattr(M, "NEAR_FLOOR", 1)
    assert M.median_distance(W32) == pytest.approx(ref, rel=1e-14, abs=0.0)
    assert decided == [torch.float32, torch.float64]


def test_a_window_that_starts_too_close_to_the_middle_is_not_trusted(monkeypatch) -> None:
    """Pairs below the window are counted without their difference form, so the window must
    start 2δ below the middle Gram-form values (δ: the Gram form's error). A bracket whose low
    end leaves less (here 2δ above the lower middle value, inside the 3δ widening) makes the
    float32 route decline; the float64 route then decides, equal to numpy's median of pdist."""
    g = torch.Generator().manual_seed(22)
    W32 = torch.randn(300, 48, generator=g) * torch.exp(torch.randn(300, 1, generator=g) / 3)
    Y = W32.double()
    sq = (Y * Y).sum(1)
    d32 = M.upper_sq(W32).reshape(-1)
    delta = 2 * M._gram_error(48, d32) * float(sq.max())
    lo, hi = M._middle_ranks(300 * 299 // 2)
    t_lo, t_hi = M._kth(d32, lo, hi)
    monkeypatch.setattr(M, "_bracket", lambda d, lo, hi, margin, p: (t_lo + 2 * delta, t_hi))
    decided: list[tuple[torch.dtype, bool]] = []
    filtered = M._median_filtered

    def spy(Y, sq, D, **k):
        mid = filtered(Y, sq, D, **k)
        decided.append((D.dtype, mid is not None))
        return mid

    monkeypatch.setattr(M, "_median_filtered", spy)
    got = M.median_distance(W32)
    assert decided == [(torch.float32, False), (torch.float64, True)]
    assert got == pytest.approx(float(np.median(pdist(Y.numpy()))), rel=1e-14, abs=0.0)


def test_kernel_columns_are_scipys_kernel() -> None:
    """Kernel columns (the Gram form in float64) equal the kernel computed by scipy's cdist;
    a row's own entry and a duplicate's are exactly 1."""
    from scipy.spatial.distance import cdist

    X = _random(13, 37, 11, 0.4)
    X[20] = X[3]
    sigma = median_bandwidth(X)
    ref = np.exp(-cdist(X.numpy(), X.numpy(), "sqeuclidean") / (2 * sigma**2))
    kern = V._Kernel(X, sigma)
    for c in (0, 3, 20, 36):
        col = kern.columns([c])[:, 0]
        np.testing.assert_allclose(col.numpy(), ref[:, c], rtol=1e-13, atol=0)
        assert float(col[c]) == 1.0


def test_median_selection_equals_exact_on_new_shapes(real_rows) -> None:
    """At `median`, through vendi_select (the kernel read from the median's distances): 27 × 5
    random rows with repeated rows against the mpmath greedy, and 333 rows of the real
    gate_proj against the plain float64 greedy (shapes no other test uses)."""
    W = _random(14, 27, 5, 0.5)
    W[[9, 21]] = W[[2, 4]]
    fast, _ = vendi_select(W, 6, bandwidth="median")
    assert fast == exact_select(W, 6, bandwidth="median")[0]
    R = real_rows[1000:1333]
    fast, _ = vendi_select(R, 10, bandwidth="median")
    assert fast == direct_select(R, 10, bandwidth="median")


def test_near_identity_warning(real_rows, caplog) -> None:
    W = real_rows[:200]
    V._warned.clear()
    with caplog.at_level(logging.WARNING, logger="laserkit"):
        vendi_select(W, 3, bandwidth=1.0)
        vendi_select(W, 3, bandwidth="median")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "nearly the identity at bandwidth 1" in lines[0] and "--bandwidth median" in lines[0]


def test_prefix_reuse(monkeypatch) -> None:
    W = _random(8, 60, 10, 0.3)
    full, s_full = vendi_select(W, 9, bandwidth=2.0)
    V._cache.clear()
    calls = []
    step = V._Greedy.step
    monkeypatch.setattr(V._Greedy, "step", lambda self: (calls.append(1), step(self)))
    small, s_small = vendi_select(W, 4, bandwidth=2.0)
    assert small == full[:4] and len(calls) == 4
    again, s_again = vendi_select(W, 3, bandwidth=2.0)  # a smaller ρ: prefix, no work
    assert again == full[:3] and len(calls) == 4
    more, s_more = vendi_select(W, 9, bandwidth=2.0)  # a larger ρ: resumes at step 5
    assert more == full and len(calls) == 9 and s_more == s_full
    other, _ = vendi_select(W + 1e-3, 3, bandwidth=2.0)  # other content: its own selection
    assert len(calls) == 12


def test_min_diversity_runs_and_differs() -> None:
    W = _random(5, 30, 10)
    most, s_most = vendi_select(W, 5)
    least, s_least = vendi_select(W, 5, min_diversity=True)
    assert len(least) == 5 and s_least < s_most and most != least


def test_ties_pick_lowest_index() -> None:
    base = _random(6, 4, 8, 1.0)
    W = torch.cat([base, base])  # rows 4..7 duplicate rows 0..3
    idx, _ = vendi_select(W, 4)
    assert idx[0] == 0 and all(i < 4 for i in idx)
    # the most similar pick is a duplicate of row 0: the first one, row 4
    least, _ = vendi_select(W, 2, min_diversity=True)
    assert least == [0, 4] == exact_select(W, 2, min_diversity=True)[0]


def test_reconstruct_is_least_squares_projection() -> None:
    W = _random(7, 30, 12)
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
    bad = W.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(LaserkitError, match="NaN"):
        vendi_reduce(bad, 0.5)


def test_intervention_keys_stay_the_same() -> None:
    """Old run directories stay resumable: a number is still stored as the same float."""
    old = {
        "kind": "vendi-score",
        "rho": 0.1,
        "use_quality": False,
        "min_diversity": False,
        "q": 1.0,
        "bandwidth": 1.0,
    }
    assert Intervention.from_dict(old).to_dict() == old
    med = Intervention(kind="vendi-score", rho=0.1, bandwidth="median")
    assert Intervention.from_dict(json.loads(json.dumps(med.to_dict()))) == med
    assert "bandwidth=median" in med.describe()


def test_editor_changes_only_that_matrix_and_restores() -> None:
    model = make_tiny("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ed = Editor(model)
    recs = ed.apply("fc_in", 0, Intervention(kind="vendi-score", rho=0.2, bandwidth="median"))
    (target,) = ed.targets("fc_in", 0)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {target.param}
    assert len(recs[0]["selected"]) == recs[0]["rank"] == 6  # ⌊0.2·min(64, 32)⌋
    ed.restore()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_cli_bandwidth_option(tmp_path) -> None:
    model = make_tiny("llama")
    model.save_pretrained(tmp_path / "tiny")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    base = [
        sys.executable,
        "-m",
        "laserkit",
        "reduce",
        str(tmp_path / "tiny"),
        "--lname",
        "fc_in",
        "--lnum",
        "0",
        "--rho",
        "0.2",
        "--intervention",
        "vendi-score",
    ]
    bad = subprocess.run(
        [*base, "--bandwidth", "wide"], env=env, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "bandwidth 'wide'" in lines[0] and "median" in lines[0]
    ok = subprocess.run(
        [*base, "--bandwidth", "median", "--out", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    rec = json.loads((tmp_path / "out" / "laserkit.json").read_text())
    assert "median" in json.dumps(rec)
    for cmd in ("search",):  # the option exists there too (compose shares the same check)
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "laserkit",
                cmd,
                str(tmp_path / "tiny"),
                "--task",
                "fever-bigbench",
                "--intervention",
                "vendi-score",
                "--bandwidth",
                "0",
                "--run-dir",
                str(tmp_path / cmd),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = res.stderr.strip().splitlines()
        assert res.returncode != 0 and len(lines) == 1, res.stderr
        assert "bandwidth 0.0 must be a finite number > 0 or 'median'" in lines[0]
