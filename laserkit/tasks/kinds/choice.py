"""``choice``: multiple choice; the answer with the highest summed log-probability is the
model's (docs/methods.md). Also length-normalised accuracy and the gold answer's log-loss."""

from __future__ import annotations

from collections.abc import Sequence

from ...core.errors import LaserkitError
from ..requests import Loglikelihood, Scores
from ..spec import Example, Task
from .base import Ask, Records, TaskKind, mean


class Kind(TaskKind):
    name = "choice"
    doc = "multiple choice: the answer with the highest summed log-probability"
    fields = "choices"
    metric_names = ("accuracy", "accuracy_normalized", "log_loss")
    supported_by_masked = True

    def check(self, ex: Example, where: str) -> None:
        if not ex.choices or any(not isinstance(c, str) or not c.strip() for c in ex.choices):
            raise LaserkitError(f"{where}: needs a non-empty list of non-empty answer choices")
        if not ex.gold or any(not 0 <= g < len(ex.choices) for g in ex.gold):
            raise LaserkitError(f"{where}: no correct answer among the choices {list(ex.choices)}")
        super().check(ex, where)

    def evaluate(self, task: Task, examples: Sequence[Example], ask: Ask) -> Records:
        answers: list[Scores] = ask(
            [Loglikelihood(ex.prompt, ex.choices, ex.system) for ex in examples]
        )
        records = [_record(ex, a) for ex, a in zip(examples, answers, strict=True)]
        return records, {
            "accuracy": mean(r["correct"] for r in records),
            "accuracy_normalized": mean(r["correct_normalized"] for r in records),
            "log_loss": mean(r["log_loss"] for r in records),
        }

    def preview(self, task: Task, ex: Example) -> dict:
        return {"choices": list(ex.choices), "gold": [ex.choices[g] for g in ex.gold]}


def _record(ex: Example, a: Scores) -> dict:
    lp, ntok = a.logprobs, a.n_tokens
    pred = max(range(len(lp)), key=lambda i: (lp[i], -i))
    pred_norm = max(range(len(lp)), key=lambda i: (lp[i] / ntok[i], -i))
    g = max(ex.gold, key=lambda i: (lp[i], -i))
    return {
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
        "truncated": a.truncated,
    }
