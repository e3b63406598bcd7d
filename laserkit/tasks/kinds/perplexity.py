"""``perplexity``: the perplexity of texts, in laserRMT's fixed chunks or a sliding window
(lower is better; docs/methods.md). The score spans examples, so it is never streamed in chunks."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ...core.errors import LaserkitError
from ..requests import Perplexity, Windows
from ..spec import Example, Task
from .base import Ask, Records, TaskKind


class Kind(TaskKind):
    name = "perplexity"
    doc = "perplexity of text in fixed chunks (laserRMT) or a sliding window (lower is better)"
    fields = "text"
    metric_names = ("perplexity", "log_loss")
    chat = False
    prompted = False
    chunked = False

    def check(self, ex: Example, where: str) -> None:
        if not ex.text:
            raise LaserkitError(f"{where}: empty text")

    def evaluate(self, task: Task, examples: Sequence[Example], ask: Ask) -> Records:
        where = f"task {task.name!r}"
        asked = [
            Perplexity(ex.text, task.chunking, task.max_length, task.stride, where)
            for ex in examples
        ]
        answers: list[Windows] = ask(asked)
        if task.chunking == "fixed":
            return _chunks(task, examples, answers)
        records, total_nll, total_n = [], 0.0, 0
        for ex, a in zip(examples, answers, strict=True):
            nll, n = -sum(a.sums), sum(a.counts)
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
            raise LaserkitError(f"task {task.name!r}: the text has fewer than two tokens")
        return records, {
            "perplexity": math.exp(total_nll / total_n),
            "log_loss": total_nll / total_n,
            "n_tokens": total_n,
            "chunking": "sliding",
            **answers[0].settings,
        }

    def preview(self, task: Task, ex: Example) -> dict:
        return {"text": ex.text[:500] + ("..." if len(ex.text) > 500 else "")}


def _chunks(task: Task, examples: Sequence[Example], answers: list[Windows]) -> Records:
    """laserRMT's perplexity: exp(mean of the chunk losses over every chunk of every text)."""
    losses = [x for a in answers for x in a.chunk_losses]
    length = answers[0].settings["chunk_length"]
    records = []
    for ex, a in zip(examples, answers, strict=True):
        mine, n = a.chunk_losses, a.n_tokens
        loss = sum(mine) / len(mine) if mine else None
        records.append(
            {
                "id": ex.id,
                "n_tokens": n,
                "n_chunks": len(mine),
                "dropped_tokens": n - len(mine) * length,
                "log_loss": loss,
                "perplexity": math.exp(loss) if loss is not None and mine else None,
            }
        )
    loss = sum(losses) / len(losses)
    return [r for r in records if r["n_chunks"]], {
        "perplexity": math.exp(loss),
        "log_loss": loss,
        "n_chunks": len(losses),
        "n_tokens": sum(a.n_tokens for a in answers),
        "chunking": "fixed",
        "chunk_length": length,
    }
