"""Evaluate a model (as loaded, or edited in memory) on a task: per-example records and a
summary, batched and exact.

The task's kind (tasks/kinds/*.py) turns examples into requests and answers into records; the
scorer chosen for the model's type answers the requests (eval/scorer.py: ``CausalScorer`` in
causal.py, ``MaskedScorer`` in masked.py). The conventions (docs/methods.md, with the
reference's mistakes fixed):

- Multiple choice: each answer is scored by the summed log-probability of its full tokenization
  as a continuation of the prompt (causal.py says how the two are tokenized and joined).
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
- Splits (splits.py, the one rule): with ``limit``, the first ``limit`` examples (after the
  optional seeded shuffle) form the dataset; ``validation`` is its first ⌊0.2·n⌋, moved to the
  end of a group the boundary cuts, ``test`` the rest. ``seed`` shuffles whole groups.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..core.errors import LaserkitError
from ..core.fileio import EVAL_FILES, atomic_dir, atomic_write_text, check_dir_holds_only
from ..tasks import matching as M
from ..tasks.kinds import kind_of
from ..tasks.kinds.lm_eval import RESULTS_FILE as LM_EVAL_RESULTS
from ..tasks.registry import get_task
from ..tasks.sources import load_examples
from ..tasks.spec import Task, check_max_new_tokens
from . import scoring as S
from .causal import PPL_BATCH_TOKENS, PPL_CHUNK, PPL_WINDOW, CausalScorer
from .intervals import score_interval
from .masked import MaskedScorer
from .scorer import Scorer, Settings
from .splits import (
    SPLITS,
    VALIDATION_FRACTION,
    n_validation,
    shuffle_examples,
    split_examples,
)

__all__ = [
    "PPL_BATCH_TOKENS",
    "PPL_CHUNK",
    "PPL_WINDOW",
    "SPLITS",
    "VALIDATION_FRACTION",
    "EvalResult",
    "batching",
    "chat_settings",
    "evaluate",
    "n_validation",
    "preview",
    "scorer_for",
    "shuffle_examples",
    "split_examples",
]

# the scorers, the first that accepts a model answers for it (masked LMs, else causal)
SCORERS: tuple[type[Scorer], ...] = (MaskedScorer, CausalScorer)


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


def token_f1(prediction: str, answer: str) -> float:
    """SQuAD's token F1 (kept here for callers; see tasks/matching.py)."""
    return M.squad_f1(prediction, answer)


def answer_found(prediction: str, answers: Sequence) -> bool:
    """Any accepted answer occurs in the prediction as whole words (numbers as numbers)."""
    return M.judge(prediction, tuple(answers), "contains")["correct"]


def scorer_for(model: nn.Module, tokenizer, settings: Settings) -> Scorer:
    """The scorer for the model's type: a masked LM's at mask positions, else a causal LM's."""
    cls = next(c for c in SCORERS if c.accepts(model))
    return cls(model, tokenizer, settings)


def evaluate(
    model: nn.Module,
    tokenizer,
    task: Task | str,
    *,
    split: str = "all",
    limit: int | None = None,
    batch_size: int | None = None,
    batch_tokens: S.BatchTokens = None,
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
    ``system_prompt`` override the task's (docs/tasks.md). Batches (``batching``): a token
    budget (``batch_tokens``) or fixed ``batch_size`` rows.
    """
    batch_size, budget = batching(model, batch_size, batch_tokens)
    check_max_new_tokens(max_new_tokens)
    task = get_task(task, data) if data is not None or not isinstance(task, Task) else task
    kind = kind_of(task.kind)
    chat, system = chat_settings(task, chat_template, system_prompt)
    examples = shuffle_examples(load_examples(task), seed)
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
    settings = Settings(
        batch_size=batch_size,
        batch_tokens=budget,
        progress=progress,
        max_len=S.context_length(model, max_length),
        max_new_tokens=max_new_tokens if max_new_tokens is not None else task.max_new_tokens or 0,
        embedder=embedder,
        chat_template=chat,
        system_prompt=system,
        answer_prefix=task.answer_prefix,
    )
    scorer = scorer_for(model, tokenizer, settings)
    scorer.check(kind)
    t0 = time.perf_counter()
    records, metrics = kind.evaluate(task, examples, scorer.answer)
    metric = task.metric or ""
    summary = {
        "task": task.name,
        "kind": task.kind,
        "split": split,
        "n": len(records),
        "n_available": n_total,
        "limit": limit,
        "seed": seed,
        "metric": metric,
        "score": metrics[metric],
        "higher_is_better": task.higher_is_better,
        **metrics,
        **({"chat_template": _shown(chat), "system_prompt": system} if kind.chat else {}),
        **({"max_new_tokens": settings.max_new_tokens} if kind.generates else {}),
        **({"batch_tokens": budget} if budget is not None else {}),
        "truncated": sum(bool(r.get("truncated")) for r in records),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    summary["ci95"] = score_interval(records, metric)  # the score's 95% interval (plots)
    if "log_loss" in metrics:
        summary["log_loss_ci95"] = score_interval(records, "log_loss")
    return EvalResult(summary=summary, records=records)


def batching(
    model: nn.Module, batch_size: int | None, batch_tokens: S.BatchTokens
) -> tuple[int | None, int | None]:
    """(most rows per batch, token budget) in force (docs/usage.md, "Batches"). The default,
    ``batch_tokens`` "auto" (None): on CUDA a budget sized from free memory
    (``scoring.resolve_batch_tokens``), rows capped only by a ``batch_size`` given; elsewhere
    no budget and ``batch_size`` rows (default 4 on a CPU, where bigger batches of
    full-vocabulary logits only cost memory bandwidth: bench/RESULTS.md, "Evaluation"). A
    number of tokens: that budget, rows capped by ``batch_size`` if given. "off": fixed rows
    (default 16 on a GPU)."""
    if batch_size is not None and batch_size < 1:
        raise LaserkitError("batch size must be at least 1")
    tokens = S.parse_batch_tokens(batch_tokens)
    budget = S.resolve_batch_tokens(model, tokens)
    if tokens is None and budget is not None:
        S.note_budget(budget, model)
    if budget is None and batch_size is None:
        batch_size = 16 if S.model_device(model).type == "cuda" else 4
    return batch_size, budget


def chat_settings(
    task: Task, chat_template: str | None = None, system_prompt: str | None = None
) -> tuple[str, str | None]:
    """The chat template and system prompt in force: the caller's override, else the task's."""
    chat = chat_template or task.chat_template or "none"
    system = system_prompt if system_prompt is not None else task.system_prompt
    if chat != "none" and not kind_of(task.kind).chat:
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
    kind = kind_of(task.kind)
    out = []
    for ex in load_examples(task)[:n]:
        item: dict = {"id": ex.id}
        if kind.prompted:
            if chat == "none":
                item["prompt"] = ex.prompt
            elif chat == "chatml" or tokenizer is not None:
                item["prompt"] = S.chat_text(
                    tokenizer, ex.prompt, chat, ex.system if ex.system is not None else system
                )
            else:
                raise LaserkitError("rendering this chat template needs the model's tokenizer")
        item.update(kind.preview(task, ex))
        out.append(item)
    return out
