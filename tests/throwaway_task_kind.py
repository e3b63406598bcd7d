"""A task kind that laserkit does not ship, in one file: what docs/tasks.md says a new kind is
(a TaskKind subclass registered by name). tests/test_task_kinds.py imports it (and a subprocess
imports it before the CLI) to show that a task file may name it, that evaluate scores it with
the scorer of the model's type, and that `eval --dry-run --show` previews it."""

from __future__ import annotations

from laserkit.core.errors import LaserkitError
from laserkit.tasks.kinds import KINDS, TaskKind, mean
from laserkit.tasks.requests import Loglikelihood

WORDS = ("yes", "no")


@KINDS.register("yes-no")
class YesNo(TaskKind):
    name = "yes-no"
    doc = "a yes/no question: the more likely of ' yes' and ' no' is the answer"
    metric_names = ("accuracy", "log_loss")

    def check(self, ex, where):
        if len(ex.answers) != 1 or str(ex.answers[0]).lower() not in WORDS:
            raise LaserkitError(f"{where}: the answer must be yes or no, not {list(ex.answers)}")
        super().check(ex, where)

    def evaluate(self, task, examples, ask):
        answers = ask([Loglikelihood(ex.prompt, WORDS, ex.system) for ex in examples])
        records = []
        for ex, a in zip(examples, answers, strict=True):
            gold = WORDS.index(str(ex.answers[0]).lower())
            pred = 0 if a.logprobs[0] >= a.logprobs[1] else 1
            records.append(
                {
                    "id": ex.id,
                    "prediction": WORDS[pred],
                    "correct": pred == gold,
                    "log_loss": -a.logprobs[gold] / a.n_tokens[gold],
                }
            )
        return records, {
            "accuracy": mean(r["correct"] for r in records),
            "log_loss": mean(r["log_loss"] for r in records),
        }

    def preview(self, task, ex):
        return {"answer": str(ex.answers[0]).lower()}
