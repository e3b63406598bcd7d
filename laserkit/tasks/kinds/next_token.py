"""``next_token``: the model's top-1 next token is the answer's first token (CounterFact's rule,
lower-cased and stripped), with top-k accuracy for the task's ``topk``."""

from __future__ import annotations

from collections.abc import Sequence

from .. import matching as M
from ..requests import NextToken, Ranked
from ..spec import Example, Task
from .answers import answers_preview, check_answers_present
from .base import Ask, Records, TaskKind, mean


class Kind(TaskKind):
    name = "next_token"
    doc = "the top-1 next token is the answer's first token (CounterFact)"
    metric_names = ("accuracy", "log_loss")
    supported_by_masked = True

    def metrics(self, task: Task) -> tuple[str, ...]:
        return self.metric_names + tuple(f"top{k}_accuracy" for k in task.topk)

    def metrics_doc(self) -> str:
        return super().metrics_doc() + ", top{k}_accuracy"

    def answer_mode(self, task: Task) -> str:
        return "exact"  # plain answers: their first token is what counts

    def check(self, ex: Example, where: str) -> None:
        check_answers_present(ex, where)
        super().check(ex, where)

    def evaluate(self, task: Task, examples: Sequence[Example], ask: Ask) -> Records:
        asked = [
            NextToken(ex.prompt, tuple(M.continuations(ex.answers, "exact")), ex.system)
            for ex in examples
        ]
        answers: list[Ranked] = ask(asked)
        records = []
        for ex, a in zip(examples, answers, strict=True):
            rec = {
                "id": ex.id,
                "prediction": a.prediction,
                "answers": list(ex.answers),
                "correct": a.rank == 1,
                "log_loss": a.log_loss,
                "answer_rank": a.rank,
                "truncated": a.truncated,
            }
            rec.update({f"top{k}": a.rank <= k for k in task.topk})
            records.append(rec)
        summary = {
            "accuracy": mean(r["correct"] for r in records),
            "log_loss": mean(r["log_loss"] for r in records),
        }
        summary.update({f"top{k}_accuracy": mean(r[f"top{k}"] for r in records) for k in task.topk})
        return records, summary

    def preview(self, task: Task, ex: Example) -> dict:
        return answers_preview(ex, "exact")
