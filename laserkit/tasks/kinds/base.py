"""A task kind is a class: what it reports (its metrics, the default one), its defaults, what an
example must hold, how examples become requests (tasks/requests.py) and answers become
per-example records and a summary, and what ``eval --dry-run --show`` prints of an example.
The kinds laserkit ships are one file each in this folder; a new kind is one more file, a
subclass of ``TaskKind`` registered by name (``@KINDS.register("name")``, or the entry-point
group ``laserkit.task_kinds``; docs/tasks.md).

``Task`` (spec.py) holds a kind's name and spec.py's ``KINDS`` maps names to classes
(``"module:Kind"``, imported on first use); ``kind_of(task.kind)`` is the kind object. Nothing
else in laserkit asks which kind a task is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, ClassVar

from ...core.errors import LaserkitError
from ..spec import KINDS, LOWER_IS_BETTER, Example, declarable

# a kind's evaluate() sends requests of one type through this and gets their answers, in order
Ask = Callable[[Sequence[Any]], list[Any]]
Records = tuple[list[dict], dict]
__all__ = ["KINDS", "Ask", "Records", "TaskKind", "declarable", "kind_of", "mean"]


class TaskKind:
    """The default of every hook; a kind overrides what differs. ``task`` is a spec.Task."""

    name: ClassVar[str] = ""
    doc: ClassVar[str] = ""  # one line for `laserkit tasks --schema`
    metric_names: ClassVar[tuple[str, ...]] = ()  # selectable metrics, the default first
    declarable: ClassVar[bool] = True  # may a task file say `kind: <name>`
    chat: ClassVar[bool] = True  # a prompt that a chat template may wrap
    prompted: ClassVar[bool] = True  # examples have a prompt (perplexity: a text)
    generates: ClassVar[bool] = False  # reports its generation length (max_new_tokens)
    chat_template: ClassVar[str] = "none"  # the default chat template
    max_new_tokens: ClassVar[int] = 15  # the default generation length (the LASER reference)
    chunked: ClassVar[bool] = True  # the summary is a mean over records (streamed in chunks)
    # runs made before a run stored its generation length used this one (None: never stored)
    legacy_max_new_tokens: ClassVar[int | None] = None
    supported_by_masked: ClassVar[bool] = False  # masked LMs answer its requests
    # which Example fields readers fill (formats.py): "answers" (answers), "choices" (choices
    # and gold), "pair" (chosen and rejected) or "text"; the prompt for all but "text"
    fields: ClassVar[str] = "answers"

    def metrics(self, task: Any) -> tuple[str, ...]:
        """The metrics a task of this kind reports that can be selected on."""
        return self.metric_names

    def metrics_doc(self) -> str:
        """The metrics as `laserkit tasks --schema` lists them (default first)."""
        return ", ".join(self.metric_names)

    def default_metric(self, task: Any) -> str:
        return self.metric_names[0]

    def higher_is_better(self, task: Any) -> bool:
        return task.metric not in LOWER_IS_BETTER

    def forward_only(self, task: Any) -> bool:
        """Whether scoring is forward passes over fixed inputs (what the prefix cache needs);
        generation makes new inputs every pass."""
        return not self.generates

    def answer_mode(self, task: Any) -> str | None:
        """The matching mode (tasks/matching.py) its examples' answers are checked under, or
        None when they have no answers to match."""
        return None

    def check(self, ex: Example, where: str) -> None:
        """Refuse an example that lacks what this kind needs (one line naming the record)."""
        if not ex.prompt.strip():
            raise LaserkitError(f"{where}: empty prompt")

    def load(self, task: Any) -> list[Example] | None:
        """The task's examples when this kind reads them itself (lm-eval); None: the task's
        sources (sources.py)."""
        return None

    def evaluate(self, task: Any, examples: Sequence[Example], ask: Ask) -> Records:
        """Per-example records and the summary's metrics, from the answers ``ask`` gives."""
        raise NotImplementedError

    def preview(self, task: Any, ex: Example) -> dict:
        """What `eval --dry-run --show` prints of an example after its prompt."""
        return {}

    def describe(self, task: Any) -> str:
        """Settings shown after the metric in the dry run's header (", match contains")."""
        return ""

    def changed_since(self, task: Any, definitions: int, label: str) -> list[str]:
        """Why a run made under task definitions ``definitions`` (search/config.py) scored
        ``task`` (named ``label``) differently from today."""
        return []

    def where(self, task: Any) -> str | None:
        """Where the data comes from, when this kind knows better than the task's sources."""
        return None


@cache
def kind_of(name: str) -> TaskKind:
    """The kind object of a kind name (an unknown name is one line listing the known ones)."""
    kind = KINDS.get(name)()
    if not isinstance(kind, TaskKind):
        raise LaserkitError(f"task kind {name!r} is not a laserkit.tasks.kinds.TaskKind")
    return kind


def mean(values: Any) -> float:
    vals = [float(v) for v in values]
    return sum(vals) / len(vals) if vals else float("nan")
