"""Every scorer, batched, against a direct one-sequence-at-a-time computation on a tiny random
llama that uses the real default tokenizer (vocabulary 49152)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny

from laserkit.core.errors import LaserkitError
from laserkit.eval import scoring as S
from laserkit.eval.evaluate import evaluate
from laserkit.tasks.registry import Example, Task


@pytest.fixture(scope="module")
def tok(default_model_dir):
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(default_model_dir)
    t.pad_token = t.pad_token or t.eos_token
    return t


@pytest.fixture(scope="module")
def tiny():
    return make_tiny("llama", vocab_size=49152, num_hidden_layers=2)


def _lp(model, ids: list[int]) -> torch.Tensor:
    """Direct: log-softmax of one unpadded sequence, no mask, no batching."""
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().log_softmax(-1)


def _direct_sum(model, ids: list[int], start: int) -> float:
    lp = _lp(model, ids)
    return sum(float(lp[t - 1, ids[t]]) for t in range(start, len(ids)))


def _task(kind: str, examples: list[Example], **kw) -> Task:
    t = Task(name="t", kind=kind, **kw)
    t._examples = examples
    return t


CHOICE = [
    Example("a", "Q: Is the sky blue?\nA:", ("yes", "no", "it depends on the weather"), (0,)),
    Example("b", "Premise: a dog runs.\nRelation: ", ("entailment", "non-entailment"), (1,)),
    Example("c", "Capital of France?", ("Paris", "Lyon"), (0, 1)),
    Example("d", "x", ("a", "a b c d e f"), (1,)),  # one choice a prefix of the other
    Example("e", "Q: Is the sky blue?\nA:", ("no", "yes"), (1,)),  # same prompt as "a"
]


def _direct_choice(model, tok, ex: Example) -> list[float]:
    prompt = ex.prompt.rstrip()
    ws = ex.prompt[len(prompt) :] or " "
    pids = tok(prompt)["input_ids"]
    return [
        _direct_sum(model, pids + tok(ws + c, add_special_tokens=False)["input_ids"], len(pids))
        for c in ex.choices
    ]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_choice_batched_equals_direct(tiny, tok, batch_size):
    res = evaluate(tiny, tok, _task("choice", CHOICE), batch_size=batch_size, progress=False)
    for ex, rec in zip(CHOICE, res.records, strict=True):
        want = _direct_choice(tiny, tok, ex)
        assert rec["logprobs"] == pytest.approx(want, abs=2e-4)
        best = max(range(len(want)), key=lambda i: want[i])
        assert rec["prediction"] == ex.choices[best]
        assert rec["correct"] == (best in ex.gold)
        gold = max(want[g] for g in ex.gold)
        g = max(ex.gold, key=lambda i: want[i])
        prompt = ex.prompt.rstrip()
        n_tok = len(
            tok((ex.prompt[len(prompt) :] or " ") + ex.choices[g], add_special_tokens=False)[
                "input_ids"
            ]
        )
        assert rec["log_loss"] == pytest.approx(-gold / n_tok, abs=2e-4)  # mean over tokens
        assert rec["answer_rank"] == 1 + sum(v > gold + 1e-9 for v in want)
    s = res.summary
    assert s["metric"] == "accuracy" and s["higher_is_better"] is True
    assert (
        s["score"]
        == s["accuracy"]
        == pytest.approx(sum(r["correct"] for r in res.records) / len(CHOICE))
    )
    assert s["log_loss"] == pytest.approx(sum(r["log_loss"] for r in res.records) / len(CHOICE))


def test_truncation_keeps_the_answer_and_matches_direct(tiny, tok):
    long_prompt = "word " * 60 + "\nAnswer:"
    ex = Example("long", long_prompt, ("yes", "no way"), (0,))
    res = evaluate(
        tiny, tok, _task("choice", [ex, CHOICE[0]]), batch_size=2, progress=False, max_length=16
    )
    rec = res.records[0]
    assert rec["truncated"] is True and res.records[1]["truncated"] is False
    assert res.summary["truncated"] == 1
    pids = tok(long_prompt.rstrip())["input_ids"]
    for choice, got in zip(ex.choices, rec["logprobs"], strict=True):
        cont = tok(" " + choice, add_special_tokens=False)["input_ids"]
        ids = pids[-(16 - len(cont)) :] + cont  # left-truncated prompt, whole answer
        assert len(ids) == 16
        assert got == pytest.approx(_direct_sum(tiny, ids, 16 - len(cont)), abs=2e-4)


def test_fit_and_boundary_edge_cases(tok):
    assert S.fit([1, 2, 3], [4, 5], 10) == ([1, 2, 3, 4, 5], 3, False)
    assert S.fit([1, 2, 3], [4, 5], 4) == ([2, 3, 4, 5], 2, True)
    ids, start, cut = S.fit([1, 2, 3], [4, 5, 6, 7, 8], 4)  # answer longer than the context
    assert (ids, start, cut) == ([3, 4, 5, 6], 1, True)
    assert S.split_boundary("Relation: ", "entailment") == ("Relation:", " entailment")
    assert S.split_boundary("A:\n", "yes") == ("A:\n", "yes")  # a final newline stays
    assert S.split_boundary("is", " true") == ("is", " true")
    assert S.split_boundary("is", "true", " ") == ("is", " true")
    assert S.encode_prompt(tok, "") == [
        tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    ]


def test_token_logprobs_shares_prefix_rows(tiny, tok):
    calls = []
    h = tiny.register_forward_pre_hook(
        lambda m, a, kw: calls.append(kw["input_ids"].shape), with_kwargs=True
    )
    try:
        reqs = [([5, 6, 7], 1), ([5, 6, 7, 8, 9], 3), ([5, 6, 7], 2), ([11, 12], 1), ([11, 13], 1)]
        out, _ = S.token_logprobs(tiny, reqs, pad_id=0, batch_size=8)
    finally:
        h.remove()
    # inputs [5,6] are read from the row [5,6,7,8]; [11,12] and [11,13] share the input [11]
    assert calls == [torch.Size([2, 4])]
    for (ids, start), got in zip(reqs, out, strict=True):
        assert float(got.sum()) == pytest.approx(_direct_sum(tiny, ids, start), abs=2e-4)
    with pytest.raises(LaserkitError):
        S.token_logprobs(tiny, [([5, 6], 2)], pad_id=0)


def test_next_token_ranks_equal_direct(tiny, tok):
    exs = [
        Example("1", "The capital of France is", answers=("Paris",)),
        Example("2", "Danielle Darrieux's mother tongue is", answers=("French",)),
        Example("3", "one two three", answers=(" four five",)),
    ]
    res = evaluate(
        tiny, tok, _task("next_token", exs, topk=(1, 5, 1000)), batch_size=2, progress=False
    )
    vocab = S.vocab_index(tok, 49152)
    for ex, rec in zip(exs, res.records, strict=True):
        pids = tok(ex.prompt)["input_ids"]
        cont = tok(" " + ex.answers[0].lstrip(), add_special_tokens=False)["input_ids"]
        lp = _lp(tiny, pids + cont)[len(pids) - 1]
        same = vocab.same_as(tok, cont[0])
        assert cont[0] in same.tolist()
        want_rank = int((lp > lp[same].max()).sum()) + 1
        assert rec["answer_rank"] == want_rank
        assert rec["correct"] == (want_rank == 1) and rec["top1000"] == (want_rank <= 1000)
        assert rec["prediction"] == tok.decode([int(lp.argmax())])
        assert rec["log_loss"] == pytest.approx(
            -_direct_sum(tiny, pids + cont, len(pids)) / len(cont), abs=2e-4
        )
    assert set(res.summary) >= {"top1_accuracy", "top5_accuracy", "top1000_accuracy"}


def _direct_greedy(model, ids: list[int], n: int, eos: set[int]) -> list[int]:
    out = []
    for _ in range(n):
        lp = _lp(model, ids + out)[-1].clone()
        if not out and eos:  # at least one new token (min_new_tokens=1, as the reference)
            lp[sorted(eos)] = -float("inf")
        nxt = int(lp.argmax())
        if nxt in eos:
            break
        out.append(nxt)
    return out


def test_greedy_generation_left_padded_equals_direct(tiny, tok):
    prompts = [
        tok(p)["input_ids"]
        for p in ["Hello", "The genre of Weird Al is a long prompt", "One two three four", "x"]
    ]
    want = [_direct_greedy(tiny, p, 6, set()) for p in prompts]
    for cache in (True, False):
        got = S.greedy_generate(
            tiny,
            prompts,
            max_new_tokens=6,
            pad_id=tok.pad_token_id,
            eos_ids=[],
            batch_size=3,
            use_cache=cache,
        )
        assert got == want
    stop = want[1][2]  # a token the second prompt generates third: generation stops before it
    got = S.greedy_generate(
        tiny, prompts, max_new_tokens=6, pad_id=tok.pad_token_id, eos_ids=[stop], batch_size=4
    )
    assert got[1] == want[1][:2]
    assert got == [_direct_greedy(tiny, p, 6, {stop}) for p in prompts]
    assert S.greedy_generate(tiny, prompts, max_new_tokens=0, pad_id=0, eos_ids=[]) == [[]] * 4


def test_generate_task_scores_generated_tokens_only(tiny, tok):
    # the answer appears in the prompt: only the generated text may count
    exs = [
        Example("1", "Paris Paris Paris. The capital of France is", answers=("Paris",)),
        Example("2", "Say hello:", answers=("hello", "hi")),
    ]
    res = evaluate(
        tiny, tok, _task("generate", exs), batch_size=2, max_new_tokens=5, progress=False
    )
    for ex, rec in zip(exs, res.records, strict=True):
        gen = _direct_greedy(tiny, tok(ex.prompt)["input_ids"], 5, {tok.eos_token_id})
        assert rec["prediction"] == tok.decode(gen, skip_special_tokens=True)
        assert rec["correct"] == any(a.lower() in rec["prediction"].lower() for a in ex.answers)
    assert set(res.summary) >= {"accuracy", "f1", "log_loss"}


def test_answer_matching_and_f1():
    from laserkit.eval.evaluate import answer_found, token_f1

    assert answer_found(" comedy and parody.", ["Parody"])
    assert not answer_found(" a genre", ["comedy"])
    assert token_f1("the Eiffel tower", "Eiffel Tower in Paris") == pytest.approx(2 / 3)
    assert token_f1("Eiffel Tower", "Eiffel Tower") == 1.0
    assert token_f1("", "x") == 0.0


@pytest.mark.parametrize(
    "n,window,stride", [(50, 16, 8), (50, 16, 16), (17, 16, 5), (3, 16, 8), (1, 16, 8)]
)
def test_sliding_windows_score_every_token_once(n, window, stride):
    seen = []
    for b, e, first in S.sliding_windows(n, window, stride):
        assert e - b <= window and first >= 1
        seen += list(range(b + first, e))
    if stride == window:  # no context for a window's first token: it cannot be scored
        assert sorted(seen) == [t for t in range(1, n) if t % window]
    else:
        assert sorted(seen) == list(range(1, n))
    with pytest.raises(LaserkitError):
        S.sliding_windows(n, window, window + 1)


def test_perplexity_equals_direct(tiny, tok):
    text = "The quick brown fox jumps over the lazy dog. " * 6
    ids = tok(text)["input_ids"]
    exs = [Example("doc", text=text), Example("short", text="Hello there, world")]
    # one window covering everything == the plain full-sequence perplexity
    task = _task("perplexity", exs, max_length=512)
    res = evaluate(tiny, tok, task, progress=False)
    lp = _lp(tiny, ids)
    nll = -sum(float(lp[t - 1, ids[t]]) for t in range(1, len(ids)))
    assert res.records[0]["log_loss"] == pytest.approx(nll / (len(ids) - 1), abs=1e-4)
    assert res.summary["metric"] == "perplexity" and res.summary["higher_is_better"] is False
    # small windows: the same as scoring each window on its own
    task = _task("perplexity", exs[:1], max_length=16, stride=8)
    res = evaluate(tiny, tok, task, batch_size=3, progress=False)
    want = 0.0
    for b, e, first in S.sliding_windows(len(ids), 16, 8):
        want -= _direct_sum(tiny, ids[b:e], first)
    assert res.summary["n_tokens"] == len(ids) - 1
    assert res.summary["perplexity"] == pytest.approx(math.exp(want / (len(ids) - 1)), rel=1e-4)


def test_semantic_score_self_embedder_equals_direct(tiny, tok):
    exs = [
        Example(
            "1", "Tell me a joke", chosen="Why did the chicken cross the road?", rejected="No."
        ),
        Example("2", "What is 2+2?", chosen="4", rejected="I refuse to answer."),
    ]
    res = evaluate(
        tiny,
        tok,
        _task("semantic", exs),
        embedder="self",
        max_new_tokens=4,
        batch_size=2,
        progress=False,
    )
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Tell me a joke"}], tokenize=False, add_generation_prompt=True
    )
    gen = _direct_greedy(
        tiny, tok(prompt, add_special_tokens=False)["input_ids"], 4, {tok.eos_token_id}
    )
    assert res.records[0]["prediction"] == tok.decode(gen, skip_special_tokens=True)

    def emb(text):
        with torch.no_grad():
            h = tiny(torch.tensor([tok(text)["input_ids"]]), output_hidden_states=True)
        return torch.nn.functional.normalize(h.hidden_states[-1][0].mean(0), dim=-1)

    g = emb(res.records[0]["prediction"])
    want = float(g @ emb(exs[0].chosen) - g @ emb(exs[0].rejected))
    assert res.records[0]["score"] == pytest.approx(want, abs=1e-4)
    s = res.summary
    assert s["metric"] == "semantic_score" and s["higher_is_better"] is True
    assert s["score"] == pytest.approx(sum(r["score"] for r in res.records) / 2)


def test_semantic_minilm_and_chatml(tiny, tok):
    e = S.embed(["a cat", "a kitten", "stock market report"], "minilm")
    assert e.shape[0] == 3 and torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])
    ids = S.chat_prompt(tok, "hi", "chatml")
    assert tok.decode(ids) == S.CHATML.format(prompt="hi")
    with pytest.raises(LaserkitError):
        S.chat_prompt(tok, "hi", "vicuna")
    exs = [Example("1", "Say something kind", chosen="You are wonderful.", rejected="Go away.")]
    res = evaluate(
        tiny, tok, _task("semantic", exs), max_new_tokens=3, progress=False, chat_template="chatml"
    )
    r = res.records[0]
    assert r["score"] == pytest.approx(r["cos_chosen"] - r["cos_rejected"])
    assert res.summary["embedder"] == "minilm" and res.summary["chat_template"] == "chatml"


def test_bad_arguments_are_refused(tok):
    tiny = make_tiny("llama", vocab_size=49152, num_hidden_layers=1)
    with pytest.raises(LaserkitError, match="batch size"):
        evaluate(tiny, tok, _task("choice", CHOICE[:1]), batch_size=0)
    with pytest.raises(LaserkitError, match="split"):
        evaluate(tiny, tok, _task("choice", CHOICE[:1]), split="train")
