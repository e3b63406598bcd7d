"""Paired statistics against direct, independent computations (scipy, explicit loops)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy.stats import binomtest

from laserkit.eval import stats


def test_mcnemar_matches_scipy_binomtest():
    rng = random.Random(1)
    for _ in range(20):
        a = [rng.random() < 0.6 for _ in range(80)]
        b = [rng.random() < 0.7 for _ in range(80)]
        only_a = sum(x and not y for x, y in zip(a, b, strict=True))
        only_b = sum(y and not x for x, y in zip(a, b, strict=True))
        m = stats.mcnemar_exact(a, b)
        assert (m["only_base"], m["only_other"]) == (only_a, only_b)
        if only_a + only_b:
            ref = binomtest(only_a, only_a + only_b, 0.5).pvalue
            assert m["p_value"] == pytest.approx(ref, rel=1e-9)
    assert stats.mcnemar_exact([True, False], [True, False])["p_value"] == 1.0


def test_paired_bootstrap_is_seeded_and_matches_a_direct_loop():
    rng = random.Random(2)
    a = [float(rng.random() < 0.5) for _ in range(50)]
    b = [float(rng.random() < 0.6) for _ in range(50)]
    r1 = stats.paired_bootstrap(a, b, n_boot=500, seed=7)
    assert r1 == stats.paired_bootstrap(a, b, n_boot=500, seed=7)
    assert r1["diff"] == pytest.approx(sum(b) / 50 - sum(a) / 50)
    # the same resamples, drawn one at a time
    g = np.random.default_rng(7)
    idx = g.integers(0, 50, size=(256, 50))
    idx2 = g.integers(0, 50, size=(244, 50))
    means = [sum(b[i] - a[i] for i in row) / 50 for row in list(idx) + list(idx2)]
    lo, hi = np.quantile(means, [0.025, 0.975])
    assert r1["ci95"] == pytest.approx([lo, hi])
    assert lo <= r1["diff"] <= hi


def test_compare_says_plainly_when_not_significant():
    base = [{"id": str(i), "correct": i % 2 == 0, "log_loss": 1.0} for i in range(40)]
    same = [dict(r) for r in base]
    same[0]["correct"] = not same[0]["correct"]
    c = stats.compare(base, list(reversed(same)), seed=0)  # aligned by id, not position
    assert c["n"] == 40 and not c["significant"] and c["verdict"].startswith("not significant")
    better = [{"id": str(i), "correct": True, "log_loss": 0.5} for i in range(40)]
    c2 = stats.compare(base, better, seed=0)
    assert c2["significant"] and c2["diff"] == pytest.approx(0.5)
    assert c2["p_value"] == pytest.approx(binomtest(0, 20, 0.5).pvalue)
    assert c2["log_loss"]["diff"] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="same examples"):
        stats.compare(base, better[:-1])


def test_best_of_n_null_matches_a_direct_permutation():
    rng = random.Random(3)
    n, t = 30, 6
    base = [{"id": str(i), "correct": rng.random() < 0.5} for i in range(n)]
    trials = [[{"id": str(i), "correct": rng.random() < 0.5} for i in range(n)] for _ in range(t)]
    r = stats.best_of_n_null(base, trials, n_perm=300, seed=5)
    d = [[float(tr[i]["correct"]) - float(base[i]["correct"]) for i in range(n)] for tr in trials]
    assert r["observed_gain"] == pytest.approx(max(sum(row) / n for row in d))
    g = np.random.default_rng(5)
    signs = list(g.choice([-1.0, 1.0], size=(256, n))) + list(g.choice([-1.0, 1.0], size=(44, n)))
    null = [max(sum(s[i] * row[i] for i in range(n)) / n for row in d) for s in signs]
    assert r["null_mean"] == pytest.approx(sum(null) / len(null))
    exceed = sum(v >= r["observed_gain"] - 1e-12 for v in null)
    assert r["p_value"] == pytest.approx((1 + exceed) / 301)
    # pure selection noise: the winner does not stand out; a planted effect does
    assert r["null_mean"] > 0
    planted = [[{"id": str(i), "correct": True} for i in range(n)]] + trials
    assert stats.best_of_n_null(base, planted, n_perm=300, seed=5)["stands_out"]


def test_cli_eval_compare_pairs_two_models_on_the_same_examples(tmp_path, default_model_dir):
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from conftest import make_tiny
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    dirs = []
    for seed in (0, 1):
        d = tmp_path / f"m{seed}"
        make_tiny("llama", vocab_size=len(tok), num_hidden_layers=1, seed=seed).save_pretrained(d)
        tok.save_pretrained(d)
        dirs.append(d)
    data = tmp_path / "qa.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"q{i}",
                    "prompt": f"Q{i}: pick",
                    "choices": ["yes", "no", "maybe"],
                    "answer": "yes",
                }
            )
            + "\n"
            for i in range(30)
        )
    )
    exe = shutil.which("laserkit", path=str(Path(sys.executable).parent))
    run = [exe, "eval", str(dirs[0]), "--task", str(data), "--device", "cpu", "--dtype", "float32"]
    res = subprocess.run(
        run + ["--compare", str(dirs[1]), "--out", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "paired comparison" in res.stdout and "95% CI" in res.stdout
    res_b = subprocess.run(
        [
            exe,
            "eval",
            str(dirs[1]),
            "--task",
            str(data),
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--out",
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
    )
    assert res_b.returncode == 0, res_b.stderr[-2000:]
    cmp = json.loads((tmp_path / "a" / "summary.json").read_text())["compare"]
    ra = [json.loads(x) for x in (tmp_path / "a" / "records.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (tmp_path / "b" / "records.jsonl").read_text().splitlines()]
    diff = sum(r["correct"] for r in rb) / 30 - sum(r["correct"] for r in ra) / 30
    assert cmp["n"] == 30 and cmp["diff"] == pytest.approx(diff)
    only_a = sum(x["correct"] and not y["correct"] for x, y in zip(ra, rb, strict=True))
    only_b = sum(y["correct"] and not x["correct"] for x, y in zip(ra, rb, strict=True))
    want = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    assert cmp["p_value"] == pytest.approx(want)
    assert cmp["verdict"].split(":")[0] in res.stdout
