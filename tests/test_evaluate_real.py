"""The real default model (SmolLM2-135M-Instruct, float32, CPU) on a few dozen packaged
examples. The expected figures were recorded from one run (2026-11-22); a change in prompts,
tokenization or scoring shows up here."""

from __future__ import annotations

import pytest

from laserkit import Editor, Intervention
from laserkit.eval.evaluate import evaluate

pytestmark = pytest.mark.slow


def test_fever_figures(default_loaded):
    m, tok = default_loaded.model, default_loaded.tokenizer
    res = evaluate(m, tok, "fever-bigbench", limit=32, batch_size=16, progress=False)
    s = res.summary
    assert (s["task"], s["n"], s["metric"], s["higher_is_better"]) == (
        "fever-bigbench",
        32,
        "accuracy",
        True,
    )
    assert s["accuracy"] == pytest.approx(0.5625)  # 18 of 32
    assert s["log_loss"] == pytest.approx(7.132865205407143, rel=1e-4)
    assert res.records[0]["id"] == "163803" and res.records[0]["prediction"] == "false"
    assert res.records[0]["logprobs"] == pytest.approx([-7.79103, -7.45817], abs=1e-3)


def test_wikidata_generation_figures(default_loaded):
    m, tok = default_loaded.model, default_loaded.tokenizer
    res = evaluate(
        m, tok, "bbh-wikidata-bigbench", limit=4, batch_size=4, max_new_tokens=8, progress=False
    )
    assert [r["prediction"] for r in res.records] == [
        " a classic example of a genre that has",
        " a classic example of a rhetorical device called",
        " a 2014-2",
        " a historic bridge that was built in ",
    ]
    assert res.summary["accuracy"] == 0.0  # no acceptable answer in the generated tokens
    assert res.summary["log_loss"] == pytest.approx(8.062828421592712, rel=1e-4)


def test_evaluates_a_model_edited_in_memory(default_loaded):
    m, tok = default_loaded.model, default_loaded.tokenizer
    base = evaluate(m, tok, "fever-bigbench", limit=8, batch_size=8, progress=False).summary
    editor = Editor(m)
    try:
        editor.apply("fc_in", "-1", Intervention(kind="rank-reduction", rho=0.01))
        edited = evaluate(m, tok, "fever-bigbench", limit=8, batch_size=8, progress=False).summary
    finally:
        editor.restore()
    again = evaluate(m, tok, "fever-bigbench", limit=8, batch_size=8, progress=False).summary
    assert base["log_loss"] == pytest.approx(7.410512566566467, rel=1e-4)
    assert edited["log_loss"] == pytest.approx(4.208096265792847, rel=1e-3)
    assert again["log_loss"] == base["log_loss"] and again["accuracy"] == base["accuracy"]
