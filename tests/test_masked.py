"""Masked LMs (tiny BERT / RoBERTa from config) scored at mask positions, against a direct
one-sequence-at-a-time computation."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from laserkit.eval.evaluate import evaluate
from laserkit.tasks.registry import Example, Task

WORDS = [
    "[PAD]",
    "[UNK]",
    "[MASK]",
    "true",
    "false",
    "claim",
    "is",
    "the",
    "sky",
    "blue",
    "a",
    "b",
    "c",
    "paris",
    "capital",
    "of",
    "france",
    "non",
    "-",
    "entailment",
    "?",
    ".",
]


@pytest.fixture(scope="module")
def mtok():
    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    return PreTrainedTokenizerFast(
        tokenizer_object=t, pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]"
    )


def _task(kind, exs, **kw):
    t = Task(name="m", kind=kind, **kw)
    t._examples = exs
    return t


def _direct(model, tok, prompt, answer):
    """Sum of the answer's token log-probs with its tokens masked, one sequence, no padding."""
    a = tok(" " + answer, add_special_tokens=False)["input_ids"]
    ids = tok(prompt, add_special_tokens=False)["input_ids"] + [tok.mask_token_id] * len(a)
    with torch.no_grad():
        lp = model(input_ids=torch.tensor([ids])).logits[0].double().log_softmax(-1)
    n = len(ids)
    return sum(float(lp[n - len(a) + k, t]) for k, t in enumerate(a)), len(a)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_masked_choice_next_token_and_generate(family, mtok):
    model = make_tiny(family, vocab_size=len(WORDS))
    exs = [
        Example("1", "the sky is blue . the claim is", ("true", "false"), (0,)),
        Example("2", "claim", ("entailment", "non - entailment"), (1,)),
        Example("3", "a b c", ("paris", "capital of france"), (1,)),
    ]
    res = evaluate(model, mtok, _task("choice", exs), batch_size=2, progress=False)
    for ex, rec in zip(exs, res.records, strict=True):
        want = [_direct(model, mtok, ex.prompt, c) for c in ex.choices]
        assert rec["logprobs"] == pytest.approx([w for w, _ in want], abs=1e-4)
        best = max(range(len(want)), key=lambda i: want[i][0])
        assert rec["correct"] == (best in ex.gold)
        g = ex.gold[0]
        assert rec["log_loss"] == pytest.approx(-want[g][0] / want[g][1], abs=1e-4)
    nt = [
        Example("4", "capital of france is", answers=("paris",)),
        Example("5", "the sky is", answers=("blue",)),
    ]
    res = evaluate(model, mtok, _task("next_token", nt, topk=(1, 5)), progress=False)
    for ex, rec in zip(nt, res.records, strict=True):
        lp, _ = _direct(model, mtok, ex.prompt, ex.answers[0])
        assert rec["log_loss"] == pytest.approx(-lp, abs=1e-4)
        ids = mtok(ex.prompt, add_special_tokens=False)["input_ids"] + [mtok.mask_token_id]
        with torch.no_grad():
            row = model(input_ids=torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)
        assert rec["answer_rank"] == int((row > row[WORDS.index(ex.answers[0])]).sum()) + 1
    gen = evaluate(model, mtok, _task("generate", nt), progress=False)
    ids = mtok(nt[0].prompt, add_special_tokens=False)["input_ids"] + [mtok.mask_token_id] * 5
    with torch.no_grad():
        fill = model(input_ids=torch.tensor([ids])).logits[0, -5:].argmax(-1).tolist()
    assert gen.records[0]["prediction"] == mtok.decode(fill, skip_special_tokens=True)


def test_search_and_compose_take_a_masked_lm(tmp_path, mtok):
    import json

    from typer.testing import CliRunner

    from laserkit.cli import _register, app

    _register()
    d = tmp_path / "bert"
    make_tiny("bert", vocab_size=len(WORDS)).save_pretrained(d)
    mtok.save_pretrained(d)
    data = tmp_path / "tf.jsonl"
    words = ["the sky is blue", "a b c", "paris is the capital of france", "the claim is a"]
    data.write_text(
        "".join(
            json.dumps(
                {
                    "id": str(i),
                    "prompt": f"{words[i % 4]} . the claim is",
                    "choices": ["true", "false"],
                    "answer": ["true", "false"][i % 2],
                }
            )
            + "\n"
            for i in range(20)
        )
    )
    runs = {}
    for name, extra in (("cached", []), ("uncached", ["--no-prefix-cache"])):
        run = tmp_path / name
        res = CliRunner().invoke(
            app,
            [
                "search",
                str(d),
                "--task",
                str(data),
                "--lnum",
                "-2:",
                "--rho",
                "0.5,0.1",
                "--run-dir",
                str(run),
                "--no-save",
                "--dtype",
                "float32",
                "--device",
                "cpu",
                *extra,
            ],
        )
        assert res.exit_code == 0, res.output + repr(res.exception)
        runs[name] = json.loads((run / "result.json").read_text())
    a, b = runs["cached"], runs["uncached"]
    assert len(a["trials"]) == 8 and a["base"]["test"]["n"] == 16
    assert [(t["lname"], t["layer"], t["rho"]) for t in a["trials"]] == [
        (t["lname"], t["layer"], t["rho"]) for t in b["trials"]
    ]
    for x, y in zip(a["trials"], b["trials"], strict=True):  # the prefix cache is exact on BERT
        assert x["accuracy"] == y["accuracy"] and x["log_loss"] == pytest.approx(
            y["log_loss"], abs=1e-5
        )
    # the base model's validation score equals a direct evaluation
    from laserkit.eval.evaluate import evaluate
    from laserkit.io.load import load
    from laserkit.tasks import get_task

    loaded = load(str(d), dtype="float32", device="cpu")
    direct = evaluate(
        loaded.model, loaded.tokenizer, get_task(str(data)), split="validation", progress=False
    ).summary
    assert a["base"]["validation"]["log_loss"] == pytest.approx(direct["log_loss"], abs=1e-5)
    res = CliRunner().invoke(
        app,
        [
            "compose",
            str(d),
            "--task",
            str(data),
            "--lnum",
            "-2:",
            "--rho",
            "0.5",
            "--run-dir",
            str(tmp_path / "compose"),
            "--no-save",
            "--dtype",
            "float32",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "significance" in json.loads((tmp_path / "compose" / "result.json").read_text())
