"""A trial is judged by its task's metric: accuracy then log-loss for accuracy tasks (the paper),
the score alone otherwise. laserRMT's semantic greedy compares the mean semantic score, not the
win rate that the semantic task also reports as "accuracy"."""

from __future__ import annotations

from laserkit.interventions import Intervention
from laserkit.search import trial
from laserkit.search.config import ObjectiveConfig, RunConfig
from laserkit.search.greedy import Greedy
from laserkit.search.grid import selection_key
from laserkit.search.trial import Result, objective_value


def semantic(score: float, win_rate: float) -> dict:
    return {
        "metric": "semantic_score",
        "score": score,
        "semantic_score": score,
        "accuracy": win_rate,
        "higher_is_better": True,
    }


def test_greedy_on_the_semantic_score_keeps_what_raises_the_mean_score():
    cands = [trial.edit("fc_in", layer, Intervention(kind="mp-threshold")) for layer in (3, 2)]
    cfg = RunConfig(
        strategy="greedy",
        model="m",
        objective=ObjectiveConfig.from_json({"task": "dpo-semantic"}),
        candidates=cands,
    )
    plan = Greedy(cfg, higher_is_better=True, split="validation")
    # the two cases: 0.01 → 0.20 at the same win rate (keep), then −0.30 at 0.51 (drop)
    summaries = {
        (): semantic(0.01, 0.50),
        (3,): semantic(0.20, 0.50),
        (3, 2): semantic(-0.30, 0.51),
    }
    done: dict[str, Result] = {}
    for n, layers in enumerate(summaries):
        edits = [c for c in cands if c["layer"] in layers]
        spec = trial.make("greedy", "validation", edits)
        done[spec["key"]] = Result(n, spec, summaries[layers])
    w = plan.walk(done)
    assert not w.need
    assert [s["kept"] for s in w.steps] == [True, False]
    assert [e["layer"] for e in w.kept] == [3]


def test_selection_key_and_optuna_value_follow_the_metric():
    hi, lo = semantic(0.20, 0.40), semantic(0.05, 0.90)
    assert selection_key(hi, True, 1) < selection_key(lo, True, 0)
    assert objective_value(hi) > objective_value(lo)
    # accuracy tasks keep the paper's rule: accuracy first, then the lower log-loss
    a = {"metric": "accuracy", "score": 0.6, "accuracy": 0.6, "log_loss": 2.0}
    b = {"metric": "accuracy", "score": 0.6, "accuracy": 0.6, "log_loss": 1.0}
    c = {"metric": "accuracy", "score": 0.5, "accuracy": 0.5, "log_loss": 0.1}
    assert sorted([a, b, c], key=lambda s: selection_key(s, True, 0)) == [b, a, c]
    # an F1 task is judged by its F1 even though it reports accuracy too
    f1_hi = {"metric": "f1", "score": 0.7, "f1": 0.7, "accuracy": 0.2, "log_loss": 3.0}
    f1_lo = {"metric": "f1", "score": 0.4, "f1": 0.4, "accuracy": 0.6, "log_loss": 1.0}
    assert selection_key(f1_hi, True, 1) < selection_key(f1_lo, True, 0)
