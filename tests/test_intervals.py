"""95% intervals of one model's score (laserkit.eval.intervals) and the plots that draw them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from scipy import stats as sps

from laserkit.eval.intervals import mean_interval, score_interval, wilson
from laserkit.search import report


@pytest.mark.parametrize(("k", "n"), [(0, 5), (3, 10), (30, 60), (59, 60), (60, 60), (1, 1)])
def test_wilson_equals_scipy(k, n):
    ref = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_mean_interval_is_the_normal_interval():
    v = [0.3, 1.2, 0.7, 2.5, 0.1, 0.9]
    lo, hi = sps.norm.interval(0.95, loc=np.mean(v), scale=sps.sem(v))
    assert mean_interval(v) == pytest.approx((lo, hi), rel=1e-12)
    assert all(math.isnan(x) for x in mean_interval([1.0]))


def test_score_interval_by_metric():
    recs = [
        {"correct": c, "log_loss": ll, "f1": f}
        for c, ll, f in [(True, 0.5, 1.0), (False, 2.0, 0.5), (True, 1.0, 0.25), (False, 1.5, 0.0)]
    ]
    assert score_interval(recs, "accuracy") == pytest.approx(list(wilson(2, 4)))
    assert score_interval(recs, "f1") == pytest.approx(list(mean_interval([1, 0.5, 0.25, 0])))
    ll = mean_interval([0.5, 2.0, 1.0, 1.5])
    assert score_interval(recs, "perplexity") == pytest.approx([math.exp(x) for x in ll])
    assert score_interval([{"word_perplexity": [1.0, 3]}] * 3, "word_perplexity") is None


def test_versus_rho_shades_the_plotted_trial_and_the_base(monkeypatch, tmp_path):
    figs = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figs.append(fig) or path)
    trials = [
        {
            "lname": "fc_in",
            "layer": layer,
            "rho": rho,
            "accuracy": acc,
            "n": 60,
            "log_loss": 1.0,
            "higher_is_better": True,
            "metric": "accuracy",
        }
        for layer, rho, acc in [(0, 0.5, 0.5), (1, 0.5, 0.6), (0, 0.1, 0.4), (1, 0.1, 0.3)]
    ]
    result = {
        "trials": trials,
        "base": {"validation": {"accuracy": 0.45, "n": 60, "log_loss": 1.0}},
    }
    report.versus_rho(result, tmp_path)
    ax = figs[0].axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    ys = np.concatenate([p.vertices[:, 1] for b in bands for p in b.get_paths()])
    lo, hi = wilson(0.6 * 60, 60)  # ρ = 0.5: the best layer's accuracy, 0.6
    assert np.isclose(ys, lo).any() and np.isclose(ys, hi).any()
    base_lo, base_hi = wilson(0.45 * 60, 60)
    spans = [p.get_extents().y0 for p in ax.patches] + [p.get_extents().y1 for p in ax.patches]
    assert ax.patches, "the base's interval is drawn as a gray span"
    assert min(abs(t - ax.transData.transform((0, base_lo))[1]) for t in spans) < 1.0
    assert min(abs(t - ax.transData.transform((0, base_hi))[1]) for t in spans) < 1.0
