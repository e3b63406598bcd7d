"""laserRMT's perplexity (rmt_laser_snr.py + gptq_data_utils.py), against a direct slow
implementation written here the way the reference computes it: each text tokenized as one
string, ⌊n/L⌋ chunks of L tokens (tail dropped), torch's CrossEntropyLoss per chunk, the
exponential of the mean chunk loss over every chunk of every text."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny

from laserkit.core.errors import LaserkitError
from laserkit.eval.evaluate import evaluate
from laserkit.tasks.registry import Example, Task, get_task


@pytest.fixture(scope="module")
def tok(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


def _direct(model, tok, texts: list[str], seqlen: int) -> tuple[float, int]:
    acc, total = 0.0, 0
    loss_fct = torch.nn.CrossEntropyLoss()
    for text in texts:
        input_tok = tok(text, return_tensors="pt")["input_ids"]
        nsamples = input_tok.numel() // seqlen
        input_tok = input_tok[0, : seqlen * nsamples].view(nsamples, seqlen)
        total += nsamples
        for ii in range(nsamples):
            x = input_tok[ii].view(1, -1)
            with torch.no_grad():
                out = model(x).logits
            loss = loss_fct(out[:, :-1, :].reshape(-1, out.size(-1)).float(), x[:, 1:].reshape(-1))
            acc += loss.item()
    return math.exp(acc / total), total


def test_fixed_chunk_perplexity_equals_the_reference_loop(tok):
    model = make_tiny("llama", vocab_size=49152, num_hidden_layers=2)
    texts = [
        "The quick brown fox jumps over the lazy dog, and then it rests. " * 5,
        "Colourless green ideas sleep furiously; " * 7,
    ]
    seqlen = 16
    lengths = [len(tok(t)["input_ids"]) for t in texts]
    assert all(n % seqlen for n in lengths)  # a tail to drop in each text
    task = Task(name="t", kind="perplexity", chunking="fixed", max_length=seqlen)
    task._examples = [Example(str(i), text=t) for i, t in enumerate(texts)]
    res = evaluate(model, tok, task, batch_size=3, progress=False)
    want, n_chunks = _direct(model, tok, texts, seqlen)
    assert res.summary["n_chunks"] == n_chunks == sum(n // seqlen for n in lengths)
    assert res.summary["perplexity"] == pytest.approx(want, rel=1e-5)
    assert [r["dropped_tokens"] for r in res.records] == [n % seqlen for n in lengths]
    # the mean is over chunks, not texts: a per-text mean would weight the texts equally
    per_text = [_direct(model, tok, [t], seqlen)[0] for t in texts]
    assert [r["perplexity"] for r in res.records] == pytest.approx(per_text, rel=1e-5)
    # a text shorter than one chunk: one clear line
    task = Task(name="t", kind="perplexity", chunking="fixed", max_length=64)
    task._examples = [Example("s", text="too short")]
    with pytest.raises(LaserkitError, match="shorter than one chunk"):
        evaluate(model, tok, task, progress=False)


def test_the_builtin_perplexity_task_is_laserrmts(tmp_path):
    task = get_task("perplexity")
    assert (task.chunking, task.max_length) == ("fixed", None)  # None: 128, laserRMT's
    hubs = task.sources_at("hub")
    assert [(h.path, h.name, h.split) for h in hubs] == [
        ("Salesforce/wikitext", "wikitext-2-raw-v1", "test"),
        ("ptb_text_only", "penn_treebank", "test"),
    ]
    assert get_task("perplexity-sliding").chunking == "sliding"
    with pytest.raises(LaserkitError, match="unknown chunking 'chunky'"):
        Task(name="x", kind="perplexity", chunking="chunky")
