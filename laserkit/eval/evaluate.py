"""Evaluate a model (as loaded, or edited in memory) on a task: per-example records and a
summary, batched and exact.

Conventions (docs/methods.md, "The paper's tasks", with the reference's mistakes fixed):
- Multiple choice: each answer is scored by the summed log-probability of its full tokenization
  as a continuation of the prompt. The prompt is tokenized on its own (with the tokenizer's
  special tokens), the answer on its own without special tokens, and the two are concatenated;
  whitespace between them belongs to the answer (see ``scoring.split_boundary``). Batched and
  one-at-a-time scoring build exactly the same token sequences.
- Open answers: greedy generation; only the generated tokens are decoded and judged by the
  task's ``match`` (tasks/matching.py: whole words, numbers as numbers, parts, SQuAD F1, regex).
- Prompts are raw text unless the task (or ``chat_template=``) names a chat template; then the
  prompt is the user turn and the answer continues the assistant's turn (docs/tasks.md).
- ``log_loss`` (choice, next-token and generation tasks alike) is −log p(gold answer's tokens |
  prompt) divided by the answer's token count (the reference's "mean log prob", metric_utils'
  answer_log_prob / answer_len), not renormalized over the choices; with several gold answers
  (or acceptable answers of an open question) the most likely one (by summed log-probability)
  counts. The task's log-loss is the mean over examples. ``answer_rank`` is 1 + the number of
  choices scored above that gold answer. (Before definitions 2, see search/config.py, the
  generation tasks' log-loss was the summed one; stored runs keep their numbers.)
- Splits: with ``limit``, the first ``limit`` examples (after the optional seeded shuffle) form
  the dataset; ``validation`` is its first ⌊0.2·n⌋ (the reference's ``int(0.2 * n)``), moved to
  the end of a group the boundary cuts (a fact and its paraphrases, one TruthfulQA question's
  statements), ``test`` the rest. ``seed`` shuffles whole groups.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..core.errors import LaserkitError
from ..core.fileio import EVAL_FILES, atomic_dir, atomic_write_text, check_dir_holds_only
from ..tasks import matching as M
from ..tasks.lm_eval_kind import KIND as LM_EVAL_KIND
from ..tasks.lm_eval_kind import RESULTS_FILE as LM_EVAL_RESULTS
from ..tasks.lm_eval_kind import evaluate_lm_eval
from ..tasks.registry import get_task
from ..tasks.spec import CHAT_KINDS, Example, Task, check_max_new_tokens
from . import scoring as S
from .intervals import score_interval

SPLITS = ("all", "validation", "test")
VALIDATION_FRACTION = 0.2
PPL_WINDOW = 2048  # default perplexity window, capped by the model's context
PPL_CHUNK = 128  # laserRMT's chunk length (rmt_laser_snr.py: seqlen=128)
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
            atomic_write_text(
                tmp / "records.jsonl",
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records),
            )
            atomic_write_text(tmp / "summary.json", json.dumps(self.summary, indent=2) + "\n")
            if "lm_eval" in self.summary:  # lm-eval tasks: its results file, as lm_eval writes it
                atomic_write_text(
                    tmp / LM_EVAL_RESULTS, json.dumps(self.summary["lm_eval"], indent=2) + "\n"
                )

        return atomic_dir(out_dir, write, overwrite=True)


def check_eval_out(out_dir: str | Path) -> Path:
    """An eval --out must be new, empty, or an earlier evaluation's directory (which is replaced):
    never a file, nor a directory holding anything else (a model, a scan)."""
    return check_dir_holds_only(out_dir, EVAL_FILES, kind="evaluation")


def _grouped(items: Sequence[Example]) -> list[list[Example]]:
    """Consecutive runs of examples that share a group (ungrouped examples stand alone)."""
    out: list[list[Example]] = []
    for ex in items:
        if out and ex.group and out[-1][0].group == ex.group:
            out[-1].append(ex)
        else:
            out.append([ex])
    return out


def shuffle_examples(examples: Sequence[Example], seed: int | None) -> list[Example]:
    """A seeded shuffle that moves whole groups (a fact and its paraphrases stay together and
    in order), so no group can straddle the validation/test boundary under --seed either."""
    groups = _grouped(examples)
    if seed is not None:
        random.Random(seed).shuffle(groups)
    return [ex for g in groups for ex in g]


def n_validation(n: int) -> int:
    """The reference's validation size, int(0.2·n) (at least one example when there are any)."""
    return max(1, math.floor(VALIDATION_FRACTION * n)) if n else 0


def split_examples(
    examples: Sequence[Example], split: str = "all", seed: int | None = None
) -> list[Example]:
    """``validation`` = the first ⌊0.2·n⌋ examples (the reference's ``int(0.2 * n)``),
    extended to the end of the group the boundary falls in, so that items that belong together
    never straddle the split; ``test`` = the rest; ``all`` = everything. ``seed`` shuffles
    whole groups (deterministically) first. The splits are disjoint and cover every example."""
    if split not in SPLITS:
        raise LaserkitError(f"unknown split {split!r}: use {', '.join(SPLITS)}")
    items = shuffle_examples(examples, seed)
    n_val = n_validation(len(items))
    while (
        0 < n_val < len(items)
        and items[n_val].group
        and items[n_val].group == items[n_val - 1].group
    ):
        n_val += 1
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
    system_prompt: str | None = None

    @property
    def chat(self) -> bool:
        return self.chat_template != "none"

    def system(self, ex: Example) -> str | None:
        """The system turn: the example's own (a dataset's system field, as orca_dpo_pairs'),
        else the task's or the caller's system prompt."""
        return ex.system if ex.system is not None else self.system_prompt

    def prompt_ids(self, prompt: str, system: str | None = None) -> list[int]:
        """Generation prompt tokens: the chat text, or the raw prompt without trailing spaces
        (a final newline is kept)."""
        if self.chat:
            return S.chat_prompt(
                self.tokenizer,
                prompt,
                self.chat_template,
                self.system_prompt if system is None else system,
            )
        return S.encode_prompt(self.tokenizer, prompt.rstrip(" \t"))

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

    def answer_requests(
        self, prompt: str, answers: Sequence[str], system: str | None = None
    ) -> tuple[list, bool]:
        """(ids, start) for each answer as a continuation of the prompt, fitted to the context."""
        reqs, truncated = [], False
        if self.chat:  # the answer opens the assistant's turn, right after the template's text
            prompt = S.chat_text(
                self.tokenizer,
                prompt,
                self.chat_template,
                self.system_prompt if system is None else system,
            )

        def encode(tokenizer, text: str) -> list[int]:
            return (
                S.chat_encode(tokenizer, text, self.chat_template)
                if self.chat
                else S.encode_prompt(tokenizer, text)
            )

        for ans in answers:
            p, cont = S.split_boundary(prompt, ans, "" if self.chat else self.task.answer_prefix)
            if self.chat:
                cont = cont.lstrip(" \t")
            ids, start, cut = S.fit(
                encode(self.tokenizer, p), S.encode_continuation(self.tokenizer, cont), self.max_len
            )
            reqs.append((ids, start))
            truncated |= cut
        return reqs, truncated

    def logprobs(self, reqs: list, at_start=None, desc: str = "scoring"):
        return S.token_logprobs(
            self.model,
            reqs,
            pad_id=self.pad_id,
            batch_size=self.batch_size,
            at_start=at_start,
            progress=self.progress,
            desc=desc,
        )

    def generate(self, prompts: list[list[int]], desc: str = "generating") -> list[str]:
        keep = max(1, self.max_len - self.max_new_tokens)
        gens = S.greedy_generate(
            self.model,
            [p[-keep:] for p in prompts],
            max_new_tokens=self.max_new_tokens,
            pad_id=self.pad_id,
            eos_ids=self.eos_ids(),
            batch_size=self.batch_size,
            progress=self.progress,
            desc=desc,
        )
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


def _best_mean_loss(lps: list[torch.Tensor]) -> float:
    """The reference's log-loss of an answer: −(sum of its tokens' log-probs) / its token count;
    with several acceptable answers, that of the most likely one (by summed log-probability)."""
    best = max(lps, key=lambda t: float(t.double().sum()))
    return -float(best.double().sum()) / max(1, len(best))


def _choice(ctx: _Ctx, examples: Sequence[Example]) -> tuple[list[dict], dict]:
    built = [ctx.answer_requests(ex.prompt, ex.choices, ctx.system(ex)) for ex in examples]
    flat, slices = _groups(examples, [b[0] for b in built])
    lps, _ = ctx.logprobs(flat)
    records = []
    for ex, sl, (reqs, cut) in zip(examples, slices, built, strict=True):
        lp = _sums(lps[sl])
        ntok = [len(ids) - start for ids, start in reqs]
        pred = max(range(len(lp)), key=lambda i: (lp[i], -i))
        pred_norm = max(range(len(lp)), key=lambda i: (lp[i] / ntok[i], -i))
        g = max(ex.gold, key=lambda i: (lp[i], -i))
        records.append(
            {
                "id": ex.id,
                "prediction": ex.choices[pred],
                "gold": [ex.choices[i] for i in ex.gold],
                "correct": pred in ex.gold,
                "correct_normalized": pred_norm in ex.gold,
                "log_loss": -lp[g] / ntok[g],
                "answer_logprob": lp[g],
                "answer_rank": 1 + sum(v > lp[g] for v in lp),
                "logprobs": lp,
                "n_tokens": ntok,
                "truncated": cut,
            }
        )
    return records, {
        "accuracy": _mean(r["correct"] for r in records),
        "accuracy_normalized": _mean(r["correct_normalized"] for r in records),
        "log_loss": _mean(r["log_loss"] for r in records),
    }


def _next_token(ctx: _Ctx, examples: Sequence[Example]) -> tuple[list[dict], dict]:
    vocab = S.vocab_index(ctx.tokenizer, ctx.model.get_output_embeddings().weight.shape[0])
    built = [
        ctx.answer_requests(ex.prompt, M.continuations(ex.answers, "exact"), ctx.system(ex))
        for ex in examples
    ]
    flat, slices = _groups(examples, [b[0] for b in built])
    targets: dict[int, torch.Tensor] = {}  # first request of an example → equivalent token ids
    for sl in slices:
        firsts = [
            vocab.same_as(ctx.tokenizer, flat[i][0][flat[i][1]]) for i in range(sl.start, sl.stop)
        ]
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
        rec = {
            "id": ex.id,
            "prediction": ctx.tokenizer.decode([top]),
            "answers": list(ex.answers),
            "correct": r == 1,
            "log_loss": _best_mean_loss(lps[sl]),
            "answer_rank": r,
            "truncated": cut,
        }
        rec.update({f"top{k}": r <= k for k in ctx.task.topk})
        records.append(rec)
    summary = {
        "accuracy": _mean(r["correct"] for r in records),
        "log_loss": _mean(r["log_loss"] for r in records),
    }
    summary.update(
        {f"top{k}_accuracy": _mean(r[f"top{k}"] for r in records) for k in ctx.task.topk}
    )
    return records, summary


def token_f1(prediction: str, answer: str) -> float:
    """SQuAD's token F1 (kept here for callers; see tasks/matching.py)."""
    return M.squad_f1(prediction, answer)


def answer_found(prediction: str, answers: Sequence) -> bool:
    """Any accepted answer occurs in the prediction as whole words (numbers as numbers)."""
    return M.judge(prediction, tuple(answers), "contains")["correct"]


def _generate(ctx: _Ctx, examples: Sequence[Example]) -> tuple[list[dict], dict]:
    mode = ctx.task.match
    texts = ctx.generate([ctx.prompt_ids(ex.prompt, ctx.system(ex)) for ex in examples])
    built = [
        ctx.answer_requests(ex.prompt, M.continuations(ex.answers, mode), ctx.system(ex))
        for ex in examples
    ]
    flat, slices = _groups(examples, [b[0] for b in built])
    lps, _ = ctx.logprobs(flat) if flat else ([], [])
    records = []
    for ex, sl, text, (_, cut) in zip(examples, slices, texts, built, strict=True):
        rec = {
            "id": ex.id,
            "prediction": text,
            "answers": list(ex.answers),
            **M.judge(text, ex.answers, mode, f"{ctx.task.name} example {ex.id}"),
        }
        if mode != "regex":
            rec["f1"] = M.f1_score(text, ex.answers, mode)
            rec["log_loss"] = _best_mean_loss(lps[sl])
        rec["truncated"] = cut
        records.append(rec)
    summary = {"accuracy": _mean(r["correct"] for r in records), "match": mode}
    if mode != "regex":
        summary["f1"] = _mean(r["f1"] for r in records)
        summary["log_loss"] = _mean(r["log_loss"] for r in records)
    if any("parts_found" in r for r in records):
        summary["part_recall"] = _mean(
            sum(r["parts_found"]) / len(r["parts_found"]) for r in records if "parts_found" in r
        )
    return records, summary


def _perplexity(ctx: _Ctx, examples: Sequence[Example]) -> tuple[list[dict], dict]:
    if ctx.task.chunking == "fixed":
        return _perplexity_chunks(ctx, examples)
    window = S.context_length(ctx.model, ctx.task.max_length or PPL_WINDOW)
    stride = ctx.task.stride or max(1, window // 2)
    per_doc = []
    for ex in examples:
        ids = S.encode_prompt(ctx.tokenizer, ex.text)
        per_doc.append(
            [(ids[b:e], first) for b, e, first in S.sliding_windows(len(ids), window, stride)]
        )
    flat, slices = _groups(examples, per_doc)
    # full-vocabulary logits of long windows are large: at most PPL_BATCH_TOKENS per batch
    lps, _ = S.token_logprobs(
        ctx.model,
        flat,
        pad_id=ctx.pad_id,
        progress=ctx.progress,
        batch_size=max(1, min(ctx.batch_size, PPL_BATCH_TOKENS // window)),
        desc="perplexity",
    )
    records, total_nll, total_n = [], 0.0, 0
    for ex, sl in zip(examples, slices, strict=True):
        nll, n = -sum(_sums(lps[sl])), sum(len(t) for t in lps[sl])
        total_nll, total_n = total_nll + nll, total_n + n
        records.append(
            {
                "id": ex.id,
                "n_tokens": n,
                "log_loss": nll / n if n else None,
                "perplexity": math.exp(nll / n) if n else None,
            }
        )
    if not total_n:
        raise LaserkitError(f"task {ctx.task.name!r}: the text has fewer than two tokens")
    return records, {
        "perplexity": math.exp(total_nll / total_n),
        "log_loss": total_nll / total_n,
        "n_tokens": total_n,
        "chunking": "sliding",
        "window": window,
        "stride": stride,
    }


def _perplexity_chunks(ctx: _Ctx, examples: Sequence[Example]) -> tuple[list[dict], dict]:
    """laserRMT's perplexity: each text tokenized as one string, cut into ⌊n/L⌋ chunks of L
    tokens (tail dropped); a chunk's loss is the mean cross-entropy of its L−1 next-token
    predictions; perplexity = exp(mean of the chunk losses over every chunk of every text)."""
    length = ctx.task.max_length or PPL_CHUNK
    if length > S.context_length(ctx.model):
        raise LaserkitError(
            f"task {ctx.task.name!r}: chunk length {length} exceeds the model's "
            f"context of {S.context_length(ctx.model)} tokens"
        )
    per_doc, sizes = [], []
    for ex in examples:
        ids = S.encode_prompt(ctx.tokenizer, ex.text)
        sizes.append(len(ids))
        per_doc.append([(ids[b:e], 1) for b, e in S.fixed_chunks(len(ids), length)])
    flat, slices = _groups(examples, per_doc)
    if not flat:
        raise LaserkitError(
            f"task {ctx.task.name!r}: the text is shorter than one chunk of "
            f"{length} tokens; use a longer text or a smaller max_length"
        )
    lps, _ = S.token_logprobs(
        ctx.model,
        flat,
        pad_id=ctx.pad_id,
        progress=ctx.progress,
        batch_size=max(1, min(ctx.batch_size, PPL_BATCH_TOKENS // length)),
        desc="perplexity",
    )
    losses = [-float(t.double().mean()) for t in lps]
    records = []
    for ex, sl, n in zip(examples, slices, sizes, strict=True):
        mine = losses[sl]
        loss = sum(mine) / len(mine) if mine else None
        records.append(
            {
                "id": ex.id,
                "n_tokens": n,
                "n_chunks": len(mine),
                "dropped_tokens": n - len(mine) * length,
                "log_loss": loss,
                "perplexity": math.exp(loss) if mine else None,
            }
        )
    loss = sum(losses) / len(losses)
    return [r for r in records if r["n_chunks"]], {
        "perplexity": math.exp(loss),
        "log_loss": loss,
        "n_chunks": len(losses),
        "n_tokens": sum(sizes),
        "chunking": "fixed",
        "chunk_length": length,
    }


def _semantic(ctx: _Ctx, examples: Sequence[Example]) -> tuple[list[dict], dict]:
    texts = ctx.generate([ctx.prompt_ids(ex.prompt, ctx.system(ex)) for ex in examples])
    n = len(examples)
    emb = S.embed(
        texts + [ex.chosen for ex in examples] + [ex.rejected for ex in examples],
        ctx.embedder,
        model=ctx.model,
        tokenizer=ctx.tokenizer,
    )
    gen, chosen, rejected = emb[:n].double(), emb[n : 2 * n].double(), emb[2 * n :].double()
    cos_c, cos_r = (gen * chosen).sum(-1).tolist(), (gen * rejected).sum(-1).tolist()
    records = [
        {
            "id": ex.id,
            "prediction": t,
            "cos_chosen": c,
            "cos_rejected": r,
            "score": c - r,
            "correct": c > r,
        }
        for ex, t, c, r in zip(examples, texts, cos_c, cos_r, strict=True)
    ]
    return records, {
        "semantic_score": _mean(r["score"] for r in records),
        "accuracy": _mean(r["correct"] for r in records),
        "embedder": ctx.embedder,
    }


KIND_EVALUATORS = {
    "choice": _choice,
    "next_token": _next_token,
    "generate": _generate,
    "perplexity": _perplexity,
    "semantic": _semantic,
}
KIND_EVALUATORS[LM_EVAL_KIND] = evaluate_lm_eval  # lm-evaluation-harness tasks (docs/tasks.md)


def _mean(values) -> float:
    vals = [float(v) for v in values]
    return sum(vals) / len(vals) if vals else float("nan")


def evaluate(
    model: nn.Module,
    tokenizer,
    task: Task | str,
    *,
    split: str = "all",
    limit: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    seed: int | None = None,
    data: str | None = None,
    max_new_tokens: int | None = None,
    max_length: int | None = None,
    embedder: str = "minilm",
    chat_template: str | None = None,
    system_prompt: str | None = None,
) -> EvalResult:
    """Score ``model`` on ``task`` (a Task, a built-in name, or a task file) as it is now: an
    edited model is evaluated in memory, nothing is reloaded.

    ``limit`` keeps the first examples (after the shuffle that ``seed`` asks for), then
    ``split`` picks validation (first ⌊20%⌋, groups kept whole) or test (the rest).
    ``max_length`` caps the context (default: the model's); over-long prompts lose tokens from
    the left. ``max_new_tokens`` overrides the task's generation length. ``embedder`` (semantic
    score): "minilm", "self" or a sentence-transformers directory. ``chat_template`` and
    ``system_prompt`` override the task's (docs/tasks.md). ``batch_size`` defaults to 16 on a
    GPU and 4 on CPU, where bigger batches of full-vocabulary logits only cost memory bandwidth
    (measured in bench/RESULTS.md).
    """
    if batch_size is None:
        batch_size = 16 if S.model_device(model).type == "cuda" else 4
    if batch_size < 1:
        raise LaserkitError("batch size must be at least 1")
    check_max_new_tokens(max_new_tokens)
    task = get_task(task, data) if data is not None or not isinstance(task, Task) else task
    chat, system = chat_settings(task, chat_template, system_prompt)
    examples = shuffle_examples(task.examples(), seed)
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
    ctx = _Ctx(
        model=model,
        tokenizer=tokenizer,
        task=task,
        batch_size=batch_size,
        progress=progress,
        max_len=S.context_length(model, max_length),
        max_new_tokens=task.max_new_tokens if max_new_tokens is None else max_new_tokens,
        embedder=embedder,
        chat_template=chat,
        system_prompt=system,
    )
    t0 = time.perf_counter()
    from .masked import evaluate_masked, is_masked_lm  # noqa: PLC0415

    if is_masked_lm(model):  # the answer at mask positions, as the reference's RoBERTa scripts
        records, metrics = evaluate_masked(
            model, tokenizer, task.kind, examples, batch_size, task.topk
        )
    else:
        records, metrics = KIND_EVALUATORS[task.kind](ctx, examples)
    summary = {
        "task": task.name,
        "kind": task.kind,
        "split": split,
        "n": len(records),
        "n_available": n_total,
        "limit": limit,
        "seed": seed,
        "metric": task.metric,
        "score": metrics[task.metric],
        "higher_is_better": task.higher_is_better,
        **metrics,
        **(
            {"chat_template": _shown(chat), "system_prompt": system}
            if task.kind in CHAT_KINDS
            else {}
        ),
        **({"max_new_tokens": ctx.max_new_tokens} if task.kind in ("generate", "semantic") else {}),
        "truncated": sum(bool(r.get("truncated")) for r in records),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    summary["ci95"] = score_interval(records, task.metric)  # the score's 95% interval (plots)
    if "log_loss" in metrics:
        summary["log_loss_ci95"] = score_interval(records, "log_loss")
    return EvalResult(summary=summary, records=records)


def chat_settings(
    task: Task, chat_template: str | None = None, system_prompt: str | None = None
) -> tuple[str, str | None]:
    """The chat template and system prompt in force: the caller's override, else the task's."""
    chat = chat_template or task.chat_template
    system = system_prompt if system_prompt is not None else task.system_prompt
    if chat != "none" and task.kind not in CHAT_KINDS:
        raise LaserkitError(
            f"task {task.name!r}: a {task.kind} task scores raw text; chat templates do not apply"
        )
    if chat not in S.CHAT_NAMES:
        S.load_template(chat)  # fails in one line when it is neither Jinja nor a file
    if system and chat == "none":
        raise LaserkitError("a system prompt needs a chat template (model, chatml, Jinja)")
    return chat, system


def _shown(template: str) -> str:
    """A template as the summary names it: its name, or the start of an inline Jinja one."""
    return template if len(template) <= 80 else template[:77] + "..."


def preview(
    task: Task,
    tokenizer=None,
    n: int = 3,
    *,
    chat_template: str | None = None,
    system_prompt: str | None = None,
) -> list[dict]:
    """The first ``n`` examples as evaluation will see them (``eval --dry-run``): the exact
    prompt text after any chat template, and the answers with how they are judged. No model
    is run; a tokenizer is needed only for the model's own or a Jinja chat template."""
    chat, system = chat_settings(task, chat_template, system_prompt)
    out = []
    for ex in task.examples()[:n]:
        item: dict = {"id": ex.id}
        if task.kind == "perplexity":
            item["text"] = ex.text[:500] + ("..." if len(ex.text) > 500 else "")
            out.append(item)
            continue
        if chat == "none":
            item["prompt"] = ex.prompt
        elif chat == "chatml" or tokenizer is not None:
            item["prompt"] = S.chat_text(
                tokenizer, ex.prompt, chat, ex.system if ex.system is not None else system
            )
        else:
            raise LaserkitError("rendering this chat template needs the model's tokenizer")
        if task.kind == "choice":
            item["choices"] = list(ex.choices)
            item["gold"] = [ex.choices[g] for g in ex.gold]
        elif task.kind == "semantic":
            item["chosen"], item["rejected"] = ex.chosen, ex.rejected
        else:
            mode = task.match if task.kind == "generate" else "exact"
            item["answers"] = list(ex.answers)
            parts = M.parts_of(ex.answers, mode)
            if parts is not None:
                item["parts"] = parts
            if task.kind == "generate":
                item["match"] = mode
            item["log_loss_of"] = M.continuations(ex.answers, mode)
        out.append(item)
    return out
