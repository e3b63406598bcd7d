"""``generate``: greedy generation judged by the task's ``match`` (tasks/matching.py), with the
token F1 and the log-loss of the most likely accepted answer (docs/methods.md)."""

from __future__ import annotations

from collections.abc import Sequence

from .. import matching as M
from ..requests import Generate, Loglikelihood, Scores
from ..spec import Example, Task
from .answers import answers_preview, check_answers_present
from .base import Ask, Records, TaskKind, mean


class Kind(TaskKind):
    name = "generate"
    doc = "greedy generation; the generated text is matched against the answer"
    metric_names = ("accuracy", "f1", "log_loss")
    generates = True
    supported_by_masked = True

    def metrics(self, task: Task) -> tuple[str, ...]:
        if task.match == "regex":
            return ("accuracy",)  # no answer text to score or compare tokens with
        return self.metric_names

    def default_metric(self, task: Task) -> str:
        return "f1" if task.match == "f1" else "accuracy"

    def answer_mode(self, task: Task) -> str:
        return task.match

    def check(self, ex: Example, where: str) -> None:
        check_answers_present(ex, where)
        super().check(ex, where)

    def evaluate(self, task: Task, examples: Sequence[Example], ask: Ask) -> Records:
        mode = task.match
        texts: list[str] = ask([Generate(ex.prompt, ex.system) for ex in examples])
        asked = [
            Loglikelihood(ex.prompt, tuple(M.continuations(ex.answers, mode)), ex.system)
            for ex in examples
        ]
        scored: list[Scores] = ask(asked)
        records = []
        for ex, text, a in zip(examples, texts, scored, strict=True):
            rec = {
                "id": ex.id,
                "prediction": text,
                "answers": list(ex.answers),
                **M.judge(text, ex.answers, mode, f"{task.name} example {ex.id}"),
            }
            if mode != "regex":
                rec["f1"] = M.f1_score(text, ex.answers, mode)
                rec["log_loss"] = best_mean_loss(a)
            rec["truncated"] = a.truncated
            records.append(rec)
        summary: dict = {"accuracy": mean(r["correct"] for r in records), "match": mode}
        if mode != "regex":
            summary["f1"] = mean(r["f1"] for r in records)
            summary["log_loss"] = mean(r["log_loss"] for r in records)
        if any("parts_found" in r for r in records):
            summary["part_recall"] = mean(
                sum(r["parts_found"]) / len(r["parts_found"]) for r in records if "parts_found" in r
            )
        return records, summary

    def preview(self, task: Task, ex: Example) -> dict:
        return answers_preview(ex, task.match, match=task.match)

    def describe(self, task: Task) -> str:
        return f", match {task.match}"

    def changed_since(self, task: Task, definitions: int, label: str) -> list[str]:
        if definitions < 2 and task.match != "regex":
            return [
                f"its task {label} scored generation log-loss as the sum over the "
                "answer's tokens (now the per-token mean, the reference's)"
            ]
        return []


def best_mean_loss(a: Scores) -> float:
    """The reference's log-loss of an answer: −(sum of its tokens' log-probs) / its token count;
    with several acceptable answers, that of the most likely one (by summed log-probability)."""
    best = max(range(len(a.logprobs)), key=lambda i: a.logprobs[i])
    return -a.logprobs[best] / max(1, a.n_tokens[best])
