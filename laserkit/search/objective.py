"""What a search optimises: an Objective scores the model as it is now on one split.

The engine only sees this interface, so it can be tested on tiny random models with objectives
built from token ids, and the CLI plugs in task evaluation (laserkit.eval.evaluate) unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch
from torch import nn

from ..core.errors import LaserkitError
from ..eval import scoring as S
from ..eval.splits import shuffle_examples, split_examples, split_range
from ..tasks.kinds import kind_of
from ..tasks.sources import load_examples
from ..tasks.spec import Task
from .config import ObjectiveConfig

# semantic tasks' generation length before runs stored it (store.py names it when resuming)
LEGACY_SEMANTIC_TOKENS = 128


@dataclass
class Scored:
    """One scoring pass: a summary (task, n, metric, score, higher_is_better, ...) and records."""

    summary: dict[str, Any]
    records: list[dict] = field(default_factory=list)


class Objective(Protocol):
    """Scores the model in its current state. ``fraction`` < 1 scores only the first part of the
    split (successive halving); ``forward_only`` says whether scoring is pure forward passes over
    fixed batches, which is what the prefix cache needs (not generation)."""

    name: str
    higher_is_better: bool
    forward_only: bool

    def score(self, model: nn.Module, split: str, fraction: float = 1.0) -> Scored: ...


def split_slice(n: int, split: str) -> range:
    """Indices of a split of n items: eval/splits.py's rule (validation the first 20%)."""
    return split_range(n, split)


def head(items: Sequence, fraction: float) -> Sequence:
    """The first ceil(fraction·n) items (at least one), for successive halving."""
    if fraction >= 1.0:
        return items
    return items[: max(1, math.ceil(len(items) * fraction))]


class NextTokenObjective:
    """Next-token prediction on fixed token sequences: each sequence's last token is the answer.

    Classification-like (accuracy and log-loss), or perplexity of the answers with
    ``metric="perplexity"``. Needs no tokenizer, so tests run on tiny random models.
    """

    forward_only = True

    def __init__(
        self,
        sequences: Sequence[Sequence[int]],
        batch_size: int = 8,
        metric: str = "accuracy",
        name: str = "next-token",
        batch_tokens: int | str | None = None,
    ) -> None:
        if metric not in ("accuracy", "perplexity"):
            raise LaserkitError(f"next-token metric must be accuracy or perplexity, not {metric}")
        if any(len(s) < 2 for s in sequences):
            raise LaserkitError("every next-token sequence needs a prompt and an answer token")
        self.sequences = [list(map(int, s)) for s in sequences]
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens  # "off": fixed rows; "auto"/None or a token budget
        self.metric = metric
        self.name = name
        self.higher_is_better = metric == "accuracy"
        self._budget: tuple[int | None, int | None] | None = None  # resolved once: same batches

    @torch.no_grad()
    def score(self, model: nn.Module, split: str, fraction: float = 1.0) -> Scored:
        """Batches in index order (scoring.plan_batches; under a token budget rows are not
        capped). The ids go to the device once and predictions and log-losses come back once:
        no host synchronisation per batch."""
        idx = head(list(split_slice(len(self.sequences), split)), fraction)
        if self._budget is None:
            self._budget = S.search_batching(model, self.batch_size, self.batch_tokens)
        rows, budget = self._budget
        device = S.model_device(model)
        inputs = [self.sequences[i][:-1] for i in idx]
        if not inputs:
            return Scored(self._summary(split, []), [])
        # right padding; the answer follows the last real token
        pad = S.Padded.of(inputs, 0, device)
        answers = torch.tensor([self.sequences[i][-1] for i in idx]).to(device)
        preds, losses = [], []
        for sel in S.plan_batches([len(q) for q in inputs], rows, budget):
            width = max(len(q) for q in inputs[sel.start : sel.stop])
            with pad.batch(sel, width) as (ids, mask):
                logits = model(input_ids=ids, attention_mask=mask).logits
            last = mask.sum(1) - 1
            at = torch.arange(len(sel), device=device)
            logp = torch.log_softmax(logits[at, last].float(), -1)
            preds.append(logp.argmax(-1))
            losses.append(-logp.gather(1, answers[sel.start : sel.stop, None])[:, 0])
        host = cast("list[torch.Tensor]", S.to_host([torch.cat(preds), torch.cat(losses)]))
        predicted, log_loss = host
        records = [
            {"index": i, "answer": self.sequences[i][-1], "predicted": p, "log_loss": v}
            for i, p, v in zip(idx, predicted.tolist(), log_loss.tolist(), strict=True)
        ]
        return Scored(self._summary(split, records), records)

    def fingerprint(self) -> str:
        """Of the sequences scored (a run's identity)."""
        from ..core.fingerprint import data_fingerprint  # noqa: PLC0415

        return data_fingerprint(self.sequences)

    def _summary(self, split: str, records: list[dict]) -> dict:
        n = len(records)
        loss = sum(r["log_loss"] for r in records) / n if n else math.nan
        acc = sum(r["predicted"] == r["answer"] for r in records) / n if n else math.nan
        score = acc if self.metric == "accuracy" else math.exp(loss)
        return {
            "task": self.name,
            "split": split,
            "n": n,
            "metric": self.metric,
            "score": score,
            "higher_is_better": self.higher_is_better,
            "accuracy": acc,
            "log_loss": loss,
        }


class CallableObjective:
    """A score computed by a function of the model: constructed cases in tests and benchmarks."""

    forward_only = False

    def __init__(
        self,
        fn: Callable[[nn.Module, str], float],
        higher_is_better: bool = True,
        name: str = "callable",
        metric: str = "score",
    ) -> None:
        self.fn = fn
        self.higher_is_better = higher_is_better
        self.name = name
        self.metric = metric  # e.g. "perplexity": rules that depend on the metric (ties) apply

    def score(self, model: nn.Module, split: str, fraction: float = 1.0) -> Scored:
        value = float(self.fn(model, split))
        return Scored(
            {
                "task": self.name,
                "split": split,
                "n": 1,
                "metric": self.metric,
                "score": value,
                "higher_is_better": self.higher_is_better,
            }
        )

    def fingerprint(self) -> None:
        """A function has no examples to fingerprint."""
        return None


class TaskObjective:
    """A laserkit task scored by laserkit.eval.evaluate (the CLI's objective)."""

    def __init__(
        self,
        task: str,
        tokenizer: object,
        data: str | None = None,
        limit: int | None = None,
        batch_size: int = 16,
        seed: int | None = None,
        max_new_tokens: int | None = None,
        batch_tokens: int | str | None = None,
    ) -> None:
        from ..tasks import get_task  # noqa: PLC0415 - tasks load datasets; only when used

        self.task = get_task(task, data=data)
        if tokenizer is None:  # refused before a run is created, not in its first trial
            raise LaserkitError(
                f"task {self.task.name!r} needs the model's tokenizer and this "
                "model has none (no tokenizer files beside its weights): add "
                "them, or give a model directory or hub id that has them"
            )
        kind = kind_of(self.task.kind)
        if max_new_tokens is None:
            # only runs made before the length was stored lack it (semantic: they generated 128)
            max_new_tokens = kind.legacy_max_new_tokens
        if max_new_tokens is not None:  # the run's generation length, not the task's default
            self.task = dataclasses.replace(self.task, max_new_tokens=max_new_tokens)
        self.tokenizer = tokenizer
        self.limit = limit
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens  # None: "auto"
        self._budget: tuple[int | None, int | None] | None = None  # at the first trial
        self.seed = seed
        self.name = getattr(self.task, "name", task)
        self.higher_is_better = bool(getattr(self.task, "higher_is_better", True))
        # generation and the semantic score produce new inputs each pass: no prefix cache
        self.forward_only = kind.forward_only(self.task)

    @property
    def size(self) -> int:
        """How many examples the task has (after ``limit``)."""
        n = len(load_examples(self.task))
        return n if self.limit is None else min(n, self.limit)

    def fingerprint(self) -> str:
        """Of the examples this objective scores, in the order it splits them (after the shuffle
        and --limit): an edited data file changes it, so a resume cannot mix two data sets."""
        from ..core.fingerprint import data_fingerprint  # noqa: PLC0415

        examples = shuffle_examples(load_examples(self.task), self.seed)
        return data_fingerprint(examples[: self.limit] if self.limit is not None else examples)

    def score(self, model: nn.Module, split: str, fraction: float = 1.0) -> Scored:
        from ..eval.evaluate import evaluate  # noqa: PLC0415

        rows, budget = self._batching(model)
        if fraction < 1.0:
            result = evaluate(
                model,
                self.tokenizer,
                self._head(split, fraction),
                split="all",
                batch_size=rows,
                batch_tokens=budget if budget is not None else "off",
                progress=False,
            )
        else:
            result = evaluate(
                model,
                self.tokenizer,
                self.task,
                split=split,
                limit=self.limit,
                batch_size=rows,
                batch_tokens=budget if budget is not None else "off",
                progress=False,
                seed=self.seed,
            )
        return Scored(dict(result.summary), list(result.records))

    def _batching(self, model: nn.Module) -> tuple[int | None, int | None]:
        """(rows cap, token budget) of every trial: "auto" is resolved from free memory once,
        at the first trial, so that every trial scores the same batches (and the prefix cache
        recognises them). Under a budget rows are not capped; without one, ``batch_size``."""
        if self._budget is None:
            self._budget = S.search_batching(model, self.batch_size, self.batch_tokens)
            if self.batch_tokens is None and self._budget[1] is not None:
                S.note_budget(self._budget[1], model)
        return self._budget

    def _head(self, split: str, fraction: float) -> Task:
        """The task holding only the first part of one split, chosen exactly as evaluate()
        chooses the split (shuffle by seed, limit, then the first 20% / the rest)."""
        examples = shuffle_examples(load_examples(self.task), self.seed)
        examples = examples[: self.limit] if self.limit is not None else examples
        part = list(head(split_examples(examples, split), fraction))
        return dataclasses.replace(self.task, _examples=part)


def build_objective(cfg: ObjectiveConfig, tokenizer: object | None) -> Objective:
    """An Objective from a run's objective config."""
    if cfg.type == "next-token":
        return NextTokenObjective(
            cfg.sequences or [],
            batch_size=cfg.batch_size,
            metric=cfg.metric,
            batch_tokens=cfg.batch_tokens,
        )
    if cfg.type == "task":
        if not cfg.task:
            raise LaserkitError("the run config's task objective names no task")
        return TaskObjective(
            cfg.task,
            tokenizer,
            data=cfg.data,
            limit=cfg.limit,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            max_new_tokens=cfg.max_new_tokens,
            batch_tokens=cfg.batch_tokens,
        )
    raise LaserkitError(f"unknown objective type {cfg.type!r} in the run config")
