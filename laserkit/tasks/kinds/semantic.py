"""``semantic``: laserRMT's semantic score, cos(generation, chosen) − cos(generation, rejected),
with the generation in the model's chat template by default (docs/methods.md)."""

from __future__ import annotations

from collections.abc import Sequence

from ...core.errors import LaserkitError
from ..requests import Cosines, Generate, Similarity
from ..spec import Example, Task
from .base import Ask, Records, TaskKind, mean


class Kind(TaskKind):
    name = "semantic"
    doc = "laserRMT: cos(generation, chosen) − cos(generation, rejected)"
    fields = "pair"
    metric_names = ("semantic_score", "accuracy")
    generates = True
    chat_template = "model"
    max_new_tokens = 512  # laserRMT's output_length
    legacy_max_new_tokens = 128  # runs made before runs stored the length generated 128

    def check(self, ex: Example, where: str) -> None:
        if not (ex.chosen.strip() and ex.rejected.strip()):
            raise LaserkitError(f"{where}: needs non-empty 'chosen' and 'rejected' answers")
        super().check(ex, where)

    def evaluate(self, task: Task, examples: Sequence[Example], ask: Ask) -> Records:
        texts: list[str] = ask([Generate(ex.prompt, ex.system) for ex in examples])
        cosines: list[Similarity] = ask(
            [Cosines(t, ex.chosen, ex.rejected) for ex, t in zip(examples, texts, strict=True)]
        )
        records = [
            {
                "id": ex.id,
                "prediction": t,
                "cos_chosen": s.chosen,
                "cos_rejected": s.rejected,
                "score": s.chosen - s.rejected,
                "correct": s.chosen > s.rejected,
            }
            for ex, t, s in zip(examples, texts, cosines, strict=True)
        ]
        return records, {
            "semantic_score": mean(r["score"] for r in records),
            "accuracy": mean(r["correct"] for r in records),
            "embedder": cosines[0].embedder,
        }

    def preview(self, task: Task, ex: Example) -> dict:
        return {"chosen": ex.chosen, "rejected": ex.rejected}
