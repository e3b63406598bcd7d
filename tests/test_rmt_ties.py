"""laserRMT's tie rules in the greedy, through the engine with constructed scores: its perplexity
script keeps a step whose score is equal (``if new > old: revert``), its DPO script needs a
strict improvement (``if new <= old: revert``)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny
from test_search import run_grid

from laserkit import Intervention
from laserkit.model.targets import find_blocks
from laserkit.search import CallableObjective
from laserkit.search.greedy import greedy_config
from laserkit.search.sequential import keeps

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(tmp_path, metric: str, higher: bool, scores: dict[frozenset, float]) -> list[bool]:
    model = make_tiny("llama")
    blocks = find_blocks(model)[1]
    original = {i: b.mlp.gate_proj.weight.detach().clone() for i, b in enumerate(blocks)}

    def score(m, split):
        changed = frozenset(
            i for i, w in original.items() if not torch.equal(blocks[i].mlp.gate_proj.weight, w)
        )
        return scores[changed]

    objective = CallableObjective(score, higher_is_better=higher, metric=metric)
    iv = Intervention(rho=0.5).to_dict()
    cfg = greedy_config(
        "tiny",
        {"type": "constructed"},
        [{"lname": "fc_in", "layer": layer, "intervention": iv} for layer in (11, 10)],
    )
    result = run_grid(tmp_path, cfg, model, objective)
    return [s["kept"] for s in result["steps"]]


def test_perplexity_greedy_keeps_a_step_with_an_equal_score(tmp_path):
    a, b = frozenset({11}), frozenset({10, 11})
    # base 10; reducing layer 11 leaves it at 10 (kept, as laserRMT); adding 10 raises it (drop)
    assert _run(tmp_path, "perplexity", False, {frozenset(): 10.0, a: 10.0, b: 10.5}) == [
        True,
        False,
    ]


def test_semantic_greedy_drops_a_step_with_an_equal_score(tmp_path):
    a, c = frozenset({11}), frozenset({10})
    # base 0.1; layer 11 leaves it at 0.1 (dropped: needs new > old); layer 10 raises it (kept)
    assert _run(tmp_path, "semantic_score", True, {frozenset(): 0.1, a: 0.1, c: 0.2}) == [
        False,
        True,
    ]


def test_keeps_rule_directly():
    ppl = {"metric": "perplexity", "score": 5.0}
    sem = {"metric": "semantic_score", "score": 0.3, "accuracy": 0.5}
    acc = {"metric": "accuracy", "score": 0.5, "accuracy": 0.5, "log_loss": 1.0}
    assert keeps(dict(ppl), ppl, False) and not keeps({**ppl, "score": 5.1}, ppl, False)
    assert keeps({**ppl, "score": 4.9}, ppl, False)
    assert not keeps(dict(sem), sem, True) and keeps({**sem, "score": 0.31}, sem, True)
    assert not keeps(dict(acc), acc, True)
