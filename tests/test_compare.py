"""`laserkit compare` on a tiny model with SmolLM2's tokenizer: every method runs as its own
named run in one store, the table has base + one row per method, compare.json rereads equal, a
rerun scores no trial, the CI in the table is the paired bootstrap recomputed here from the two
runs' records, and the installed command refuses a bad --methods in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import binomtest
from test_search_cli import invoke, tiny_dir  # noqa: F401 - the tiny model fixture

from laserkit.search.compare import METHODS, Space, compare, read
from laserkit.search.compare_report import cells, ci_text
from laserkit.search.config import ObjectiveConfig
from laserkit.search.store import TrialStore, default_url

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = Space(lname="fc_in", lnum="-2:", rho="0.5,0.1", candidates=3, types="mlp,attn")


def run(tiny_dir, run_dir, resume=False):  # noqa: F811
    return compare(
        str(tiny_dir),
        ObjectiveConfig.from_cli("fever-bigbench", limit=20),
        run_dir=run_dir,
        space=SPACE,
        resume=resume,
        dtype="float32",
        device="cpu",
    )


def trial_rows(run_dir) -> int:
    """Every trial row of every run in the compare's database (whatever its state)."""
    import sqlite3

    with sqlite3.connect(run_dir / "trials.db") as db:
        return db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]


def bootstrap_ci(a: list[float], b: list[float], n_boot: int = 2000, seed: int = 0):
    """The percentile bootstrap of mean(b − a) written out plainly: one resample of the n
    example indices at a time, the mean by hand, the 2.5% and 97.5% points by linear
    interpolation between order statistics."""
    rng = np.random.default_rng(seed)
    n = len(a)
    means = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        means.append(sum(b[i] - a[i] for i in idx) / n)
    means.sort()

    def point(q: float) -> float:
        x = q * (n_boot - 1)
        lo = int(x)
        return means[lo] + (x - lo) * (means[min(lo + 1, n_boot - 1)] - means[lo])

    return point(0.025), point(0.975)


def test_compare_runs_every_method_once_and_the_table_holds_what_the_runs_say(tmp_path, tiny_dir):  # noqa: F811
    run_dir = tmp_path / "cmp"
    out = run(tiny_dir, run_dir)
    names = METHODS.names()
    assert [r["method"] for r in out["rows"]] == names
    table = cells(out)
    assert [c[0] for c in table] == ["base", *names]
    assert read(run_dir) == json.loads(json.dumps(out))  # compare.json rereads equal
    md = (run_dir / "compare.md").read_text()
    assert all(f"| {n} |" in md for n in ["base", *names])
    assert (run_dir / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    url = default_url(run_dir)
    first = names[0]
    for r in out["rows"]:
        store = TrialStore(url, r["run"])
        assert r["run"] == f"cmp/{r['method']}"
        want = METHODS.get(r["method"]).intervention
        for e in getattr(
            store.config.params, "candidates", []
        ):  # greedy: its estimator on every candidate
            assert e["intervention"]["kind"] == "mp-threshold"
            assert e["intervention"].get("estimator", "iqr") == want["estimator"]
        for e in r["edits"]:  # what was chosen is this method's intervention
            iv = e["intervention"]
            assert {k: iv.get(k, "iqr" if k == "estimator" else None) for k in want} == want
        # the base model was scored by the first method and copied into the others
        assert out["copied_base"][r["method"]] == (0 if r["method"] == first else 2)
        own = [x for x in store.results().values() if x.spec["edits"]]
        assert r["trials"] == len(own) > 0 and r["seconds"] > 0
        assert r["trials_run_now"] == len(own) + (2 if r["method"] == first else 0)

        # the table's CI and p are the paired comparison of the two test evaluations
        done = store.results()
        tests = {json.dumps(x.spec["edits"]): x for x in done.values() if x.spec["split"] == "test"}
        base_trial, best_trial = tests["[]"], tests[json.dumps(r["edits"])]
        base, best = store.records(base_trial), store.records(best_trial)
        by_id = {x["id"]: x for x in best}
        a = [float(x["correct"]) for x in base]
        b = [float(by_id[x["id"]]["correct"]) for x in base]
        lo, hi = bootstrap_ci(a, b)
        assert r["ci95"] == pytest.approx([lo, hi], abs=1e-12)
        assert r["diff"] == pytest.approx(sum(b) / len(b) - sum(a) / len(a), abs=1e-12)
        only_b = sum(y > x for x, y in zip(a, b, strict=True))
        only_a = sum(x > y for x, y in zip(a, b, strict=True))
        p = binomtest(only_b, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
        assert r["p_value"] == pytest.approx(p, rel=1e-9)
        row = next(c for c in table if c[0] == r["method"])
        assert row[4] == ci_text(r) == f"{r['diff']:+.4f} ({lo:+.4f} to {hi:+.4f})"
        assert row[3] == f"{r['test']['score']:.4f}"
        errs = [x["rel_error"] for x in best_trial.summary["edits"]]
        assert r["rel_error"] == errs
    assert out["base"]["same_in_every_run"] and out["base"]["trials"] == 2

    rows_before = trial_rows(run_dir)
    again = run(tiny_dir, run_dir, resume=True)
    assert [r["trials_run_now"] for r in again["rows"]] == [0] * len(names)
    assert trial_rows(run_dir) == rows_before  # no trial scored, enqueued or copied
    strip = ("trials_run_now", "seconds")
    assert [{k: v for k, v in r.items() if k not in strip} for r in again["rows"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in out["rows"]
    ]


def test_compare_command_prints_the_table_and_refuses_a_rerun_without_resume(tmp_path, tiny_dir):  # noqa: F811
    args = [
        "compare",
        tiny_dir,
        "--task",
        "fever-bigbench",
        "--limit",
        "10",
        "--methods",
        "svd,mp-gavish-donoho",
        "--lname",
        "fc_in",
        "--lnum",
        "-1:",
        "--rho",
        "0.5",
        "--candidates",
        "2",
        "--run-dir",
        tmp_path / "c",
        "--dtype",
        "float32",
        "--device",
        "cpu",
    ]
    result = invoke(*args)
    table = [line for line in result.output.splitlines() if "│" in line]
    first = [line.split("│")[1].strip() for line in table]
    assert [x for x in first if x] == ["base", "svd", "mp-gavish-donoho"]
    assert json.loads((tmp_path / "c" / "compare.json").read_text())["methods"] == [
        "svd",
        "mp-gavish-donoho",
    ]
    from test_search_cli import runner

    from laserkit.cli import app

    again = runner.invoke(app, [str(a) for a in args])
    assert again.exit_code != 0 and "add --resume" in str(again.exception)


def test_installed_command_refuses_an_unknown_method_in_one_line(tmp_path):
    from pathlib import Path

    exe = Path(sys.prefix) / "bin" / "laserkit"
    out = tmp_path / "never"
    p = subprocess.run(
        [
            str(exe),
            "compare",
            "default",
            "--task",
            "fever-bigbench",
            "--methods",
            "svd,vendi-fast",
            "--run-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("laserkit: error: unknown method vendi-fast")
    assert all(n in lines[0] for n in METHODS.names())
    assert p.stdout == "" and not out.exists()
