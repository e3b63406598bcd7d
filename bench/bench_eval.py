"""Batched evaluation vs a plain one-example-at-a-time loop, on the default model.

1. Multiple choice (FEVER, Epistemic Reasoning): ``laserkit.eval.evaluate`` (length-sorted batches,
   one forward per shared prompt) against the reference's loop: one forward per (example,
   answer), no batching. Same examples; the same predictions and log-probabilities (asserted).
2. Semantic score: KV-cached, batched, left-padded greedy generation against uncached
   one-at-a-time generation (the laserRMT reference recomputes the whole prefix every step).
   The same generated tokens and the same scores (asserted).
3. Token budget: batches of at most ``--batch-tokens`` tokens (rows × longest row) against fixed
   batches of ``--batch-size`` rows, on FEVER; the same predictions (asserted).

    .venv/bin/python bench/bench_eval.py [--threads 1] [--batch-size 4] [--fever 48]
                                         [--epistemic 16] [--semantic 6] [--new-tokens 24]
                                         [--batch-tokens 256]
"""

from __future__ import annotations

import argparse
import time

import torch

from laserkit.eval import scoring as S
from laserkit.eval.evaluate import evaluate
from laserkit.io.load import load
from laserkit.tasks import get_task
from laserkit.tasks.sources import load_examples


def one_at_a_time_choice(model, tok, examples) -> list[dict]:
    """The reference's way: every (example, answer) is its own forward pass."""
    out = []
    for ex in examples:
        lps = []
        for choice in ex.choices:
            prompt, cont = S.split_boundary(ex.prompt, choice)
            pids = S.encode_prompt(tok, prompt)
            ids = pids + S.encode_continuation(tok, cont)
            with torch.inference_mode():
                lp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
            lps.append(sum(float(lp[t - 1, ids[t]]) for t in range(len(pids), len(ids))))
        out.append(
            {"prediction": ex.choices[max(range(len(lps)), key=lambda i: lps[i])], "logprobs": lps}
        )
    return out


def uncached_generate(model, prompt: list[int], n: int, eos: set[int]) -> list[int]:
    """Greedy generation that recomputes the whole sequence at every step, one sample."""
    new: list[int] = []
    for _ in range(n):
        with torch.inference_mode():
            nxt = int(model(torch.tensor([prompt + new])).logits[0, -1].argmax())
        if nxt in eos:
            break
        new.append(nxt)
    return new


def bench_choice(model, tok, name: str, n: int, batch_size: int) -> None:
    task = get_task(name)
    examples = load_examples(task)[:n]
    t0 = time.perf_counter()
    ref = one_at_a_time_choice(model, tok, examples)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = evaluate(model, tok, task, limit=n, batch_size=batch_size, progress=False)
    t_batched = time.perf_counter() - t0
    for r, b in zip(ref, res.records, strict=True):
        assert r["prediction"] == b["prediction"], (r, b)
        assert max(abs(x - y) for x, y in zip(r["logprobs"], b["logprobs"], strict=True)) < 1e-3
    diff = max(
        abs(x - y)
        for r, b in zip(ref, res.records, strict=True)
        for x, y in zip(r["logprobs"], b["logprobs"], strict=True)
    )
    print(
        f"{name}: {n} examples, accuracy {res.summary['accuracy']:.4f} both ways, "
        f"max |Δ log p| {diff:.2e}"
    )
    print(
        f"  one at a time {t_ref:.2f} s, batched (batch {batch_size}) {t_batched:.2f} s, "
        f"speed-up {t_ref / t_batched:.2f}x"
    )


def bench_budget(model, tok, name: str, n: int, batch_size: int, budget: int) -> None:
    """Batches by a token budget (rows × longest row ≤ ``budget``) against fixed batches of
    ``batch_size`` rows: same examples, the same predictions and log-probabilities (asserted)."""
    task = get_task(name)
    t0 = time.perf_counter()
    fixed = evaluate(model, tok, task, limit=n, batch_size=batch_size, progress=False)
    t_fixed = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = evaluate(model, tok, task, limit=n, batch_tokens=budget, progress=False)
    t_budget = time.perf_counter() - t0
    diff = 0.0
    for a, b in zip(fixed.records, res.records, strict=True):
        assert a["prediction"] == b["prediction"], (a, b)
        diff = max(diff, *(abs(x - y) for x, y in zip(a["logprobs"], b["logprobs"], strict=True)))
    assert diff < 1e-3
    print(
        f"{name}: {n} examples, token budget {budget} vs {batch_size} rows, "
        f"max |Δ log p| {diff:.2e}"
    )
    print(
        f"  fixed rows {t_fixed:.2f} s, token budget {t_budget:.2f} s, "
        f"ratio {t_fixed / t_budget:.2f}x"
    )


def bench_semantic(model, tok, n: int, new_tokens: int, batch_size: int) -> None:
    task = get_task("dpo-semantic")
    examples = load_examples(task)[:n]
    prompts = [S.chat_prompt(tok, ex.prompt, "model") for ex in examples]
    eos = {tok.eos_token_id} | {
        i for i in [model.generation_config.eos_token_id] if isinstance(i, int)
    }
    t0 = time.perf_counter()
    ref = [uncached_generate(model, p, new_tokens, eos) for p in prompts]
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = S.greedy_generate(
        model,
        prompts,
        max_new_tokens=new_tokens,
        pad_id=tok.pad_token_id,
        eos_ids=sorted(eos),
        batch_size=batch_size,
    )
    t_batched = time.perf_counter() - t0
    assert got == ref, "cached batched generation differs from uncached one-at-a-time"
    res = evaluate(
        model, tok, task, limit=n, max_new_tokens=new_tokens, batch_size=batch_size, progress=False
    )
    assert [r["prediction"] for r in res.records] == [
        tok.decode(g, skip_special_tokens=True) for g in ref
    ]
    print(
        f"dpo-semantic: {n} prompts × ≤{new_tokens} new tokens, same tokens both ways; "
        f"semantic score {res.summary['score']:.4f} (MiniLM)"
    )
    print(
        f"  uncached one at a time {t_ref:.2f} s, KV-cached batched (batch {batch_size}) "
        f"{t_batched:.2f} s, speed-up {t_ref / t_batched:.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--fever", type=int, default=48)
    ap.add_argument("--epistemic", type=int, default=16)
    ap.add_argument("--semantic", type=int, default=6)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--batch-tokens", type=int, default=256, help="the budget compared")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load(args.model, dtype="float32", device="auto")
    model, tok = loaded.model, loaded.tokenizer
    print(f"model {loaded.path} on {S.model_device(model)}, {args.threads} thread(s)")
    bench_choice(model, tok, "fever-bigbench", args.fever, args.batch_size)
    bench_choice(model, tok, "bbh-epistemic-bigbench", args.epistemic, args.batch_size)
    bench_budget(model, tok, "fever-bigbench", args.fever, args.batch_size, args.batch_tokens)
    bench_semantic(model, tok, args.semantic, args.new_tokens, min(args.batch_size, 8))


if __name__ == "__main__":
    main()
