"""Evaluate a model (as loaded, or edited in memory) on a task: per-example records and a
summary, batched and exact.

Conventions (SPEC §1, with the reference's mistakes fixed):
- Multiple choice: each answer is scored by the summed log-probability of its full tokenization
  as a continuation of the prompt. The prompt is tokenized on its own (with the tokenizer's
  special tokens), the answer on its own without special tokens, and the two are concatenated;
  whitespace between them belongs to the answer (see ``scoring.split_boundary``). Batched and
  one-at-a-time scoring build exactly the same token sequences.
- ``log_loss`` is −log p(gold answer's tokens | prompt), summed over the answer's tokens and not
  renormalized over the choices (the paper's log-loss); with several gold answers (or acceptable
  answers of an open question) the most likely one counts. ``answer_rank`` is 1 + the number of
  choices scored above that gold answer.
- Open answers: greedy generation; only the generated tokens are decoded and scored, by
  normalized substring match (``correct``) and bag-of-words F1.
- Splits: with ``limit``, the first ``limit`` examples (after the optional seeded shuffle) form
  the dataset; ``validation`` is its first ceil(20%), ``test`` the rest (the paper's 20/80).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import scoring as S
from .errors import LaserkitError
from .fileio import EVAL_FILES, atomic_dir, atomic_write_text, check_dir_holds_only
from .tasks.formats import normalize_answer
from .tasks.registry import Example, Task, get_task

SPLITS = ("all", "validation", "test")
VALIDATION_FRACTION = 0.2
PPL_WINDOW = 2048  # default perplexity window, capped by the model's context
PPL_BATCH_TOKENS = 8192


@dataclass
class EvalResult:
    """What one evaluation produced: ``summary`` (task, n, metric, score, higher_is_better,
    accuracy, log_loss, ...) and one record per example."""

    summary: dict
    records: list[dict] = field(default_factory=list)

    def write(self, out_dir: str | Path) -> Path:
        """records.jsonl and summary.json in ``out_dir``, published together atomically (an
        earlier evaluation there is replaced whole; see ``check_eval_out``)."""
        check_eval_out(out_dir)

        def write(tmp: Path) -> None:
            atomic_write_text(tmp / "records.jsonl", "".join(
                json.dumps(r, ensure_ascii=False) + "\n" for r in self.records))
            atomic_write_text(tmp / "summary.json", json.dumps(self.summary, indent=2) + "\n")

        return atomic_dir(out_dir, write, overwrite=True)



def check_eval_out(out_dir: str | Path) -> Path:
    """An eval --out must be new, empty, or an earlier evaluation's directory (which is replaced):
    never a file, nor a directory holding anything else (a model, a scan)."""
    return check_dir_holds_only(out_dir, EVAL_FILES, kind="evaluation")


def split_examples(examples: Sequence[Example], split: str = "all",
                   seed: int | None = None) -> list[Example]:
    """``validation`` = the first ceil(20%) of the examples, ``test`` = the rest, ``all`` =
    everything; ``seed`` shuffles (deterministically) before splitting. The two splits are
    disjoint and together are all examples; validation is non-empty whenever examples are."""
    if split not in SPLITS:
        raise LaserkitError(f"unknown split {split!r}: use {', '.join(SPLITS)}")
    items = list(examples)
    if seed is not None:
        random.Random(seed).shuffle(items)
    n_val = math.ceil(VALIDATION_FRACTION * len(items))
    return items[:n_val] if split == "validation" else items[n_val:] if split == "test" else items


@dataclass
class _Ctx:
    """What every kind-specific evaluator needs."""

    model: nn.Module
    tokenizer: object
    task: Task
    batch_size: int
    progress: bool
    max_len: int
    max_new_tokens: int
    embedder: str
    chat_template: str

    @property
    def pad_id(self) -> int:
        t = self.tokenizer
        return next((i for i in (t.pad_token_id, t.eos_token_id) if i is not None), 0)

    def eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        gen = getattr(self.model, "generation_config", None)
        extra = getattr(gen, "eos_token_id", None)
        ids |= set(extra if isinstance(extra, list) else [extra])
        return sorted(i for i in ids if i is not None)

    def answer_requests(self, prompt: str, answers: Sequence[str]) -> tuple[list, bool]:
        """(ids, start) for each answer as a continuation of the prompt, fitted to the context."""
        reqs, truncated = [], False
        for ans in answers:
            p, cont = S.split_boundary(prompt, ans, self.task.answer_prefix)
            ids, start, cut = S.fit(S.encode_prompt(self.tokenizer, p),
                                    S.encode_continuation(self.tokenizer, cont), self.max_len)
            reqs.append((ids, start))
            truncated |= cut
        return reqs, truncated

    def logprobs(self, reqs: list, at_start=None, desc: str = "scoring"):
        return S.token_logprobs(self.model, reqs, pad_id=self.pad_id, batch_size=self.batch_size,
                                at_start=at_start, progress=self.progress, desc=desc)

    def generate(self, prompts: list[list[int]], desc: str = "generating") -> list[str]:
        keep = max(1, self.max_len - self.max_new_tokens)
        gens = S.greedy_generate(self.model, [p[-keep:] for p in prompts],
                                 max_new_tokens=self.max_new_tokens, pad_id=self.pad_id,
                                 eos_ids=self.eos_ids(), batch_size=self.batch_size,
                                 progress=self.progress, desc=desc)
        return [self.tokenizer.decode(g, skip_special_tokens=True) for g in gens]


def _groups(examples: Sequence[Example], per_example: list[list]) -> tuple[list, list[slice]]:
    """Flatten per-example request lists, remembering each example's slice."""
    flat, slices = [], []
    for reqs in per_example:
        slices.append(slice(len(flat), len(flat) + len(reqs)))
        flat += reqs
    return flat, slices


def _sums(lps: list[torch.Tensor]) -> list[float]:
    return [float(t.double().sum()) for t in lps]


def _choice(ctx: _Ctx, examples: Sequence[Example]) -> tuple[list[dict], dict]:
    built = [ctx.answer_requests(ex.prompt, ex.choices) for ex in examples]
    flat, slices = _groups(examples, [b[0] for b in built])
    lps, _ = ctx.logprobs(flat)
    records = []
    for ex, sl, (reqs, cut) in zip(examples, slices, built, strict=True):
        lp = _sums(lps[sl])
        ntok = [len(ids) - start for ids, start in reqs]
        pred = max(range(len(lp)), key=lambda i: (lp[i], -i))
        pred_norm = max(range(len(lp)), key=lambda i: (lp[i] / ntok[i], -i))
        g = max(ex.gold, key=lambda i: (lp[i], -i))
        records.append({
            "id": ex.id, "prediction": ex.choices[pred],
            "gold": [ex.choices[i] for i in ex.gold],
            "correct": pred in ex.gold, "correct_normalized": pred_norm in ex.gold,
            "log_loss": -lp[g], "answer_rank": 1 + sum(v > lp[g] for v in lp),
            "logprobs": lp, "n_tokens": ntok, "truncated": cut,
        })
    return records, {"accuracy": _mean(r["correct"] for r in records),
                     "accuracy_normalized": _mean(r["correct_normalized"] for r in records),
                     "log_loss": _mean(r["log_loss"] for r in records)}


def _next_token(ctx: _Ctx, examples: Sequence[Example]) -> tuple[list[dict], dict]:
    vocab = S.vocab_index(ctx.tokenizer, ctx.model.get_output_embeddings().weight.shape[0])
    built = [ctx.answer_requests(ex.prompt, ex.answers) for ex in examples]
    flat, slices = _groups(examples, [b[0] for b in built])
    targets: dict[int, torch.Tensor] = {}  # first request of an example → equivalent token ids
    for sl in slices:
        firsts = [vocab.same_as(ctx.tokenizer, flat[i][0][flat[i][1]]) for i in range(sl.start,
                                                                                    sl.stop)]
        targets[sl.start] = torch.cat(firsts).unique()

    def rank(i: int, lp: torch.Tensor) -> tuple[int, int] | None:
        if i not in targets:
            return None
        best = lp[targets[i]].max()
        return int((lp > best).sum()) + 1, int(lp.argmax())

    lps, extra = ctx.logprobs(flat, at_start=rank)
    records = []
    for ex, sl, (_, cut) in zip(examples, slices, built, strict=True):
        r, top = extra[sl.start]
        rec = {"id": ex.id, "prediction": ctx.tokenizer.decode([top]), "answers": list(ex.answers),
               "correct": r == 1, "log_loss": -max(_sums(lps[sl])), "answer_rank": r,
               "truncated": cut}
        rec.update({f"top{k}": r <= k for k in ctx.task.topk})
        records.append(rec)
    summary = {"accuracy": _mean(r["correct"] for r in records),
               "log_loss": _mean(r["log_loss"] for r in records)}
    summary.update({f"top{k}_accuracy": _mean(r[f"top{k}"] for r in records)
                    for k in ctx.task.topk})
    return records, summary


def token_f1(prediction: str, answer: str) -> float:
    """Bag-of-words F1 of the normalized texts (SQuAD / the paper's HotPotQA F1)."""
    p, a = normalize_answer(prediction).split(), normalize_answer(answer).split()
    common = sum((Counter(p) & Counter(a)).values())
    if not common:
        return 0.0
    prec, rec = common / len(p), common / len(a)
    return 2 * prec * rec / (prec + rec)


def answer_found(prediction: str, answers: Sequence[str]) -> bool:
    gen = normalize_answer(prediction)
    return any(a and a in gen for a in (normalize_answer(x) for x in answers))


def _generate(ctx: _Ctx, examples: Sequence[Example]) -> tuple[list[dict], dict]:
    texts = ctx.generate([S.encode_prompt(ctx.tokenizer, ex.prompt.rstrip())
                          for ex in examples])
    built = [ctx.answer_requests(ex.prompt, ex.answers) for ex in examples]
    flat, slices = _groups(examples, [b[0] for b in built])
    lps, _ = ctx.logprobs(flat)
    records = []
    for ex, sl, text, (_, cut) in zip(examples, slices, texts, built, strict=True):
        records.append({"id": ex.id, "prediction": text, "answers": list(ex.answers),
                        "correct": answer_found(text, ex.answers),
                        "f1": max(token_f1(text, a) for a in ex.answers),
                        "log_loss": -max(_sums(lps[sl])), "truncated": cut})
    return records, {"accuracy": _mean(r["correct"] for r in records),
                     "f1": _mean(r["f1"] for r in records),
                     "log_loss": _mean(r["log_loss"] for r in records)}


def _perplexity(ctx: _Ctx, examples: Sequence[Example]) -> tuple[list[dict], dict]:
    window = S.context_length(ctx.model, ctx.task.max_length or PPL_WINDOW)
    stride = ctx.task.stride or max(1, window // 2)
    per_doc = []
    for ex in examples:
        ids = S.encode_prompt(ctx.tokenizer, ex.text)
        per_doc.append([(ids[b:e], first) for b, e, first in S.sliding_windows(len(ids), window,
                                                                               stride)])
    flat, slices = _groups(examples, per_doc)
    # full-vocabulary logits of long windows are large: at most PPL_BATCH_TOKENS per batch
    lps, _ = S.token_logprobs(ctx.model, flat, pad_id=ctx.pad_id, progress=ctx.progress,
                              batch_size=max(1, min(ctx.batch_size, PPL_BATCH_TOKENS // window)),
                              desc="perplexity")
    records, total_nll, total_n = [], 0.0, 0
    for ex, sl in zip(examples, slices, strict=True):
        nll, n = -sum(_sums(lps[sl])), sum(len(t) for t in lps[sl])
        total_nll, total_n = total_nll + nll, total_n + n
        records.append({"id": ex.id, "n_tokens": n, "log_loss": nll / n if n else None,
                        "perplexity": math.exp(nll / n) if n else None})
    if not total_n:
        raise LaserkitError(f"task {ctx.task.name!r}: the text has fewer than two tokens")
    return records, {"perplexity": math.exp(total_nll / total_n),
                     "log_loss": total_nll / total_n, "n_tokens": total_n,
                     "window": window, "stride": stride}


def _semantic(ctx: _Ctx, examples: Sequence[Example]) -> tuple[list[dict], dict]:
    texts = ctx.generate([S.chat_prompt(ctx.tokenizer, ex.prompt, ctx.chat_template)
                          for ex in examples])
    n = len(examples)
    emb = S.embed(texts + [ex.chosen for ex in examples] + [ex.rejected for ex in examples],
                  ctx.embedder, model=ctx.model, tokenizer=ctx.tokenizer)
    gen, chosen, rejected = emb[:n].double(), emb[n:2 * n].double(), emb[2 * n:].double()
    cos_c, cos_r = (gen * chosen).sum(-1).tolist(), (gen * rejected).sum(-1).tolist()
    records = [{"id": ex.id, "prediction": t, "cos_chosen": c, "cos_rejected": r,
                "score": c - r, "correct": c > r}
               for ex, t, c, r in zip(examples, texts, cos_c, cos_r, strict=True)]
    return records, {"semantic_score": _mean(r["score"] for r in records),
                     "accuracy": _mean(r["correct"] for r in records),
                     "embedder": ctx.embedder, "chat_template": ctx.chat_template}


KIND_EVALUATORS = {"choice": _choice, "next_token": _next_token, "generate": _generate,
                   "perplexity": _perplexity, "semantic": _semantic}


def _mean(values) -> float:
    vals = [float(v) for v in values]
    return sum(vals) / len(vals) if vals else float("nan")


def evaluate(model: nn.Module, tokenizer, task: Task | str, *, split: str = "all",
             limit: int | None = None, batch_size: int | None = None, progress: bool = True,
             seed: int | None = None, data: str | None = None,
             max_new_tokens: int | None = None, max_length: int | None = None,
             embedder: str = "minilm", chat_template: str | None = None) -> EvalResult:
    """Score ``model`` on ``task`` (a Task, a built-in name, or a task file) as it is now: an
    edited model is evaluated in memory, nothing is reloaded.

    ``limit`` keeps the first examples (after the shuffle that ``seed`` asks for), then
    ``split`` picks validation (first ceil 20%) or test (the rest). ``max_length`` caps the
    context (default: the model's); over-long prompts lose tokens from the left. ``embedder``
    (semantic score): "minilm", "self" or a sentence-transformers directory. ``batch_size``
    defaults to 16 on a GPU and 4 on CPU, where bigger batches of full-vocabulary logits only
    cost memory bandwidth (measured in bench/RESULTS.md).
    """
    if type(model).__name__.endswith("ForMaskedLM"):
        raise LaserkitError("evaluation needs a causal language model; masked LMs (BERT, "
                            "RoBERTa) are not supported by laserkit eval yet")
    if batch_size is None:
        batch_size = 16 if S.model_device(model).type == "cuda" else 4
    if batch_size < 1:
        raise LaserkitError("batch size must be at least 1")
    task = get_task(task, data) if data is not None or not isinstance(task, Task) else task
    examples = list(task.examples())
    if seed is not None:
        random.Random(seed).shuffle(examples)
    n_total = len(examples)
    if limit is not None:
        if limit < 1:
            raise LaserkitError("limit must be at least 1")
        examples = examples[:limit]
    examples = split_examples(examples, split)
    if not examples:
        raise LaserkitError(f"task {task.name!r}: split {split!r} has no examples")
    if model.training:
        model.eval()  # dropout would make scores random
    ctx = _Ctx(model=model, tokenizer=tokenizer, task=task, batch_size=batch_size,
               progress=progress, max_len=S.context_length(model, max_length),
               max_new_tokens=task.max_new_tokens if max_new_tokens is None else max_new_tokens,
               embedder=embedder, chat_template=chat_template or task.chat_template)
    t0 = time.perf_counter()
    records, metrics = KIND_EVALUATORS[task.kind](ctx, examples)
    summary = {"task": task.name, "kind": task.kind, "split": split, "n": len(records),
               "n_available": n_total, "limit": limit, "seed": seed, "metric": task.metric,
               "score": metrics[task.metric], "higher_is_better": task.higher_is_better,
               **metrics, "truncated": sum(bool(r.get("truncated")) for r in records),
               "seconds": round(time.perf_counter() - t0, 3)}
    return EvalResult(summary=summary, records=records)
