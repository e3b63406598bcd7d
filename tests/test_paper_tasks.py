"""The paper's tasks built as the LASER reference builds them, from tiny files in each original
release format: deduplication, filters, order, groups and the split, counts and prompts."""

from __future__ import annotations

import json
import math

import pytest

from laserkit.eval.evaluate import split_examples
from laserkit.tasks import get_task
from laserkit.tasks.sources import load_examples


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_fever_unique_consistent_claims_dev_first(tmp_path):
    rows = [
        (1, "SUPPORTS", "A is B"),
        (2, "SUPPORTS", "A is B"),
        (3, "REFUTES", "C is D."),
        (4, "SUPPORTS", "C is D."),
        (5, "NOT ENOUGH INFO", "E?"),
        (6, "REFUTES", "F is G"),
    ]
    dev = [
        {"id": i, "verifiable": "VERIFIABLE", "label": lab, "claim": c, "evidence": []}
        for i, lab, c in rows
    ]
    test = [
        {
            "id": 7,
            "verifiable": "VERIFIABLE",
            "label": "REFUTES",
            "claim": "H is I?",
            "evidence": [],
        }
    ]
    ex = load_examples(get_task("fever", data=str(_jsonl(tmp_path / "fever.jsonl", dev + test))))
    # "A is B" twice with one label: kept once; "C is D." inconsistent: dropped; NEI dropped
    assert [e.id for e in ex] == ["1", "6", "7"]
    assert ex[0].prompt == (
        "Consider the following claim: A is B. Is this claim true or false. The claim is"
    )
    assert ex[2].prompt == (
        "Consider the following claim: H is I? Is this claim true or false. The claim is"
    )
    assert [e.choices[e.gold[0]] for e in ex] == ["true", "false", "false"]


def test_bios_reads_the_dev_rows_with_the_reference_prompts(tmp_path):
    rows = [
        {"hard_text": "She writes poems", "profession": 20, "gender": 1},
        {"hard_text": "He designs houses.", "profession": 1, "gender": 0},
        {"hard_text": "He is a nurse.", "profession": 13, "gender": 0},
    ]
    f = _jsonl(tmp_path / "bios_dev.jsonl", rows)
    g = load_examples(get_task("bios-gender", data=str(f)))
    assert len(g) == 3 and [e.choices[e.gold[0]] for e in g] == ["female", "male", "male"]
    assert g[0].prompt == (
        "Consider the following text: She writes poems. Is the person in this "
        "text a male or female? The gender of this person is"
    )
    p = load_examples(get_task("bios-profession", data=str(f)))
    assert [e.choices[e.gold[0]] for e in p] == ["poet", "architect"]  # nurse is not one of 8
    assert p[1].prompt == (
        "Consider the following text: He designs houses. What is the "
        "profession of the person in this text? The profession of this "
        "person is"
    )


def test_hotpot_answer_length_filter_and_question_mark(tmp_path):
    rows = [
        {
            "_id": "a",
            "question": "Who wrote Hamlet",
            "answer": " Shakespeare ",
            "type": "bridge",
            "level": "easy",
            "supporting_facts": [],
            "context": [],
        },
        {"_id": "b", "question": "Which city?", "answer": "Paris"},
        {"_id": "c", "question": "What is long", "answer": " ".join(["word"] * 20)},
    ]
    f = tmp_path / "hotpot_dev_fullwiki_v1.json"
    f.write_text(json.dumps(rows))
    ex = load_examples(get_task("hotpotqa", data=str(f)))
    assert [e.id for e in ex] == ["a", "b"]  # the 20-word answer is over 15 tokens
    assert ex[0].prompt == "Who wrote Hamlet? The answer is" and ex[0].answers == ("Shakespeare",)
    assert ex[1].prompt == "Which city? The answer is"


def test_truthfulqa_mc2_statements_grouped_per_question(tmp_path):
    rows = [
        {
            "question": "Is the sky green?",
            "mc1_targets": {"No.": 1, "Yes.": 0},
            "mc2_targets": {"No, it is blue.": 1, "It is not green": 1, "Yes": 0},
        },
        {
            "question": "What is 2+2?",
            "mc1_targets": {"4": 1, "5": 0},
            "mc2_targets": {"4": 1, "5": 0},
        },
    ]
    f = tmp_path / "mc_task.json"
    f.write_text(json.dumps(rows))
    ex = load_examples(get_task("truthfulqa", data=str(f)))
    assert len(ex) == 5 and [e.group for e in ex] == ["q0"] * 3 + ["q1"] * 2
    assert ex[0].prompt == (
        "Is the sky green? No, it is blue.Is this statement true or false? This statement is"
    )
    assert ex[1].prompt.startswith("Is the sky green? It is not green.Is this")
    assert [e.choices[e.gold[0]] for e in ex] == ["true", "true", "false", "true", "false"]
    # the hub's layout (choices + labels) gives the same statements
    hub = [
        {
            "question": r["question"],
            "mc2_targets": {
                "choices": list(r["mc2_targets"]),
                "labels": list(r["mc2_targets"].values()),
            },
        }
        for r in rows
    ]
    f2 = tmp_path / "hub.json"
    f2.write_text(json.dumps(hub))
    assert load_examples(get_task("truthfulqa", data=str(f2))) == ex


def test_bigbench_rows_wikidata_single_target_and_epistemic_choices(tmp_path):
    wiki = [
        {"inputs": "The capital of France is ", "targets": ["Paris"], "idx": 0},
        {"inputs": "Kyoto is in", "targets": ["Japan", "Nippon"], "idx": 1},
        {"inputs": "Q3", "targets": ["x"], "idx": 2},
    ]
    ex = load_examples(get_task("bbh-wikidata", data=str(_jsonl(tmp_path / "w.jsonl", wiki))))
    assert [e.id for e in ex] == ["0", "2"] and ex[0].prompt == "The capital of France is"
    assert ex[0].answers == ("Paris",)
    epi = [
        {"inputs": "Premise: a. Hypothesis: b.\nRelation:", "targets": ["non-entailment"], "idx": 5}
    ]
    e = load_examples(get_task("bbh-epistemic", data=str(_jsonl(tmp_path / "e.jsonl", epi))))[0]
    assert e.choices == ("entailment", "non-entailment") and e.gold == (1,)


def _counterfact(n):
    return [
        {
            "case_id": i,
            "requested_rewrite": {
                "prompt": "{} plays",
                "subject": f"S{i}",
                "target_true": {"str": "chess"},
                "target_new": {"str": "golf"},
            },
            "paraphrase_prompts": [f"P{i}a. S{i} plays", f"P{i}b. S{i} plays"],
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("seed", [None, 0, 3, 11])
def test_counterfact_groups_never_straddle_the_split(tmp_path, seed):
    f = tmp_path / "counterfact.json"
    f.write_text(json.dumps(_counterfact(7)))
    ex = load_examples(get_task("counterfact", data=str(f)))
    assert len(ex) == 21 and ex[0].prompt == "S0 plays" and ex[1].prompt == "P0a. S0 plays"
    val, test = split_examples(ex, "validation", seed), split_examples(ex, "test", seed)
    assert sorted(e.id for e in val + test) == sorted(e.id for e in ex)
    assert not {e.group for e in val} & {e.group for e in test}
    # the boundary: ⌊0.2·21⌋ = 4 items, moved to the end of the group it cuts
    assert len(val) == 3 * math.ceil(math.floor(0.2 * 21) / 3)
    for g in {e.group for e in val}:  # a group's items stay in their order
        assert [e.id for e in val if e.group == g] == [e.id for e in ex if e.group == g]
    gen = get_task("counterfact-generate", data=str(f))
    assert gen.kind == "generate" and gen.max_new_tokens == 10


def test_split_is_the_reference_int_fraction():
    from laserkit.tasks.registry import Example

    items = [Example(id=str(i), prompt="p", answers=("a",)) for i in range(14)]
    assert len(split_examples(items, "validation")) == int(0.2 * 14) == 2
    assert split_examples(items, "validation") + split_examples(items, "test") == items


def test_bigbench_subsets_keep_their_names():
    assert len(load_examples(get_task("fever-bigbench"))) == 6612
    assert load_examples(get_task("bbh-epistemic-bigbench"))
    assert load_examples(get_task("truthfulqa-bigbench"))[0].group == "q0"
