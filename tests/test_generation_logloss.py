"""Generation tasks' log-loss is the reference's per-token mean (metric_utils.answer_log_prob
summed over the answer, divided by answer_len), checked against a direct forward pass."""

from __future__ import annotations

import json

import pytest
import torch

from laserkit.eval.evaluate import evaluate
from laserkit.tasks.sources import load_examples

RECORDS = [
    {"prompt": "The capital of France is", "answer": ["Paris, France", "the city of Paris"]},
    {"prompt": "Two plus two equals", "answer": "four, not five"},
    {"prompt": "The opposite of hot is", "answer": "cold weather"},
]


def _direct_mean_loss(model, tok, prompt: str, answers: list[str]) -> float:
    """−(Σ log p(answer token | prefix)) / #answer tokens for the answer of highest summed
    log-probability, from one plain forward pass (no laserkit scoring code)."""
    best_sum, best_n = -float("inf"), 1
    for ans in answers:
        p = tok(prompt).input_ids
        a = tok(" " + ans, add_special_tokens=False).input_ids
        ids = torch.tensor([p + a])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].double(), -1)
        total = sum(float(logp[len(p) - 1 + i, t]) for i, t in enumerate(a))
        if total > best_sum:
            best_sum, best_n = total, len(a)
    return -best_sum / best_n


@pytest.mark.slow
def test_generation_log_loss_is_the_per_token_mean(default_loaded, tmp_path):
    m, tok = default_loaded.model, default_loaded.tokenizer
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    decl = tmp_path / "qa.json"
    decl.write_text(
        json.dumps(
            {
                "kind": "generate",
                "data": "qa.jsonl",
                "prompt": "{prompt}",
                "max_new_tokens": 2,
                "match": "substring",
            }
        )
    )
    res = evaluate(m, tok, str(decl), batch_size=2, progress=False)
    want = [
        _direct_mean_loss(
            m, tok, r["prompt"], r["answer"] if isinstance(r["answer"], list) else [r["answer"]]
        )
        for r in RECORDS
    ]
    got = [r["log_loss"] for r in res.records]
    assert got == pytest.approx(want, rel=2e-4)  # batched float32 vs one sequence
    assert res.summary["log_loss"] == pytest.approx(sum(want) / len(want), rel=2e-4)
    # every answer has several tokens: the old summed definition gave n times more
    assert all(
        len(tok(" " + a, add_special_tokens=False).input_ids) > 1
        for r in RECORDS
        for a in ([r["answer"]] if isinstance(r["answer"], str) else r["answer"])
    )


def test_bigbench_rows_choice_inputs_unchanged_open_inputs_stripped(tmp_path):
    """The reference: intervention_gptj_bbh.py line 165 uses the inputs as they are,
    intervention_gptj_bbh_qa.py line 94 strips them."""
    from laserkit.tasks import get_task

    epi = tmp_path / "e.jsonl"
    epi.write_text(
        json.dumps(
            {
                "inputs": "\nPremise: a. Hypothesis: b.\nRelation:",
                "targets": ["entailment"],
                "idx": 1,
            }
        )
        + "\n"
    )
    assert (
        load_examples(get_task("bbh-epistemic", data=str(epi)))[0].prompt
        == "\nPremise: a. Hypothesis: b.\nRelation:"
    )
    wiki = tmp_path / "w.jsonl"
    wiki.write_text(json.dumps({"inputs": " Kyoto is in ", "targets": ["Japan"], "idx": 1}) + "\n")
    assert load_examples(get_task("bbh-wikidata", data=str(wiki)))[0].prompt == "Kyoto is in"
