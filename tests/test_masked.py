"""Masked LMs (tiny BERT / RoBERTa from config) scored at mask positions, against a direct
one-sequence-at-a-time computation."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from laserkit.evaluate import evaluate
from laserkit.tasks.registry import Example, Task

WORDS = ["[PAD]", "[UNK]", "[MASK]", "true", "false", "claim", "is", "the", "sky", "blue", "a",
         "b", "c", "paris", "capital", "of", "france", "non", "-", "entailment", "?", "."]


@pytest.fixture(scope="module")
def mtok():
    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    return PreTrainedTokenizerFast(tokenizer_object=t, pad_token="[PAD]", unk_token="[UNK]",
                                   mask_token="[MASK]")


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
    exs = [Example("1", "the sky is blue . the claim is", ("true", "false"), (0,)),
           Example("2", "claim", ("entailment", "non - entailment"), (1,)),
           Example("3", "a b c", ("paris", "capital of france"), (1,))]
    res = evaluate(model, mtok, _task("choice", exs), batch_size=2, progress=False)
    for ex, rec in zip(exs, res.records, strict=True):
        want = [_direct(model, mtok, ex.prompt, c) for c in ex.choices]
        assert rec["logprobs"] == pytest.approx([w for w, _ in want], abs=1e-4)
        best = max(range(len(want)), key=lambda i: want[i][0])
        assert rec["correct"] == (best in ex.gold)
        g = ex.gold[0]
        assert rec["log_loss"] == pytest.approx(-want[g][0] / want[g][1], abs=1e-4)
    nt = [Example("4", "capital of france is", answers=("paris",)),
          Example("5", "the sky is", answers=("blue",))]
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
