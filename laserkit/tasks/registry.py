"""Tasks as data: a Task is a small declarative definition (kind, prompt format, answers, where
its data comes from), read from ``definitions/*.yaml`` or from a user's task file.

Adding a dataset means adding a few lines of YAML, not a script per model × dataset (the LASER
reference has about thirty of those).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import yaml

from ..errors import LaserkitError, first_line

DEFINITIONS = Path(__file__).parent / "definitions"

# kind → (primary metric, higher is better)
KINDS: dict[str, tuple[str, bool]] = {
    "choice": ("accuracy", True),  # multiple choice by summed answer log-probability
    "next_token": ("accuracy", True),  # top-1 next token (CounterFact); top-k also reported
    "generate": ("accuracy", True),  # greedy generation, answer found in the generated text
    "perplexity": ("perplexity", False),  # sliding-window perplexity of text
    "semantic": ("semantic_score", True),  # laserRMT: cos(gen, chosen) − cos(gen, rejected)
}
TASK_KEYS = {"kind", "description", "sources", "url", "aliases", "answer_prefix",
             "max_new_tokens", "topk", "max_length", "stride", "chat_template"}


@dataclass(frozen=True)
class Example:
    """One evaluation item; which fields are used depends on the task kind."""

    id: str
    prompt: str = ""
    choices: tuple[str, ...] = ()  # choice: the candidate answers
    gold: tuple[int, ...] = ()  # choice: indices of the correct candidates
    answers: tuple[str, ...] = ()  # generate / next_token: acceptable answers
    chosen: str = ""  # semantic
    rejected: str = ""  # semantic
    text: str = ""  # perplexity


@dataclass
class Task:
    """A declarative task. ``examples()`` reads its data on first use (see sources.py)."""

    name: str
    kind: str
    description: str = ""
    sources: dict = field(default_factory=dict)  # packaged / local / hub reader specs
    url: str = ""  # where to get the full original data
    answer_prefix: str = " "  # put between prompt and answer when neither supplies whitespace
    max_new_tokens: int = 15
    topk: tuple[int, ...] = (1, 5, 10)
    max_length: int | None = None  # perplexity window (default: the model's context)
    stride: int | None = None  # perplexity stride (default: half the window)
    chat_template: str = "model"  # semantic: "model", "chatml" or "none"
    data: str | None = None  # a local file (or "hub") chosen by the user
    _examples: list[Example] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LaserkitError(f"task {self.name!r}: unknown kind {self.kind!r}; "
                                f"use one of {', '.join(KINDS)}")
        self.topk = tuple(int(k) for k in self.topk)

    @property
    def metric(self) -> str:
        return KINDS[self.kind][0]

    @property
    def higher_is_better(self) -> bool:
        return KINDS[self.kind][1]

    def examples(self) -> list[Example]:
        """All examples, in the source's order (cached)."""
        if self._examples is None:
            from .sources import load_examples

            self._examples = load_examples(self)
        return self._examples

    def where(self) -> str:
        """A short description of where the data comes from, for `laserkit tasks`."""
        if self.data:
            return f"file {self.data}"
        parts = []
        if "packaged" in self.sources:
            files = self.sources["packaged"]["file"]
            files = files if isinstance(files, list) else [files]
            parts.append("packaged BIG-bench: " + ", ".join(files))
        if "hub" in self.sources:
            hubs = self.sources["hub"]
            hubs = hubs if isinstance(hubs, list) else [hubs]
            parts.append("hub: " + ", ".join(h["path"] for h in hubs))
        if "local" in self.sources:
            parts.append("--data FILE" + (f" ({self.url})" if self.url else ""))
        return "; ".join(parts)


@lru_cache(maxsize=1)
def _definitions() -> dict[str, dict]:
    """name → definition, from every YAML file under definitions/; aliases point to the name."""
    defs: dict[str, dict] = {}
    for path in sorted(DEFINITIONS.glob("*.yaml")):
        for name, spec in (yaml.safe_load(path.read_text()) or {}).items():
            unknown = set(spec) - TASK_KEYS
            if unknown:
                raise LaserkitError(f"{path.name}: task {name!r}: unknown keys {sorted(unknown)}")
            defs[name] = spec
    return defs


def _aliases() -> dict[str, str]:
    out = {}
    for name, spec in _definitions().items():
        out[name] = name
        for alias in spec.get("aliases", []):
            out[alias] = name
    return out


def list_tasks() -> list[Task]:
    """Every built-in task, in definition order."""
    return [_from_spec(name, spec) for name, spec in _definitions().items()]


def _from_spec(name: str, spec: dict, data: str | None = None) -> Task:
    kwargs = {k: v for k, v in spec.items() if k != "aliases"}
    if "topk" in kwargs:
        kwargs["topk"] = tuple(kwargs["topk"])
    return Task(name=name, data=data, **kwargs)


def get_task(name_or_path: str | Path | Task, data: str | Path | None = None) -> Task:
    """A built-in task by name (or alias), or a user's task file (YAML/JSON declaration, or a
    JSON/JSONL/CSV data file with conventional fields). ``data`` overrides the data source: a
    local file in the task's original format, or ``"hub"`` for the Hugging Face hub."""
    if isinstance(name_or_path, Task):
        return name_or_path if data is None else replace(name_or_path, data=str(data),
                                                         _examples=None)
    data = None if data is None else str(data)
    if data not in (None, "hub") and not Path(data).expanduser().is_file():
        raise LaserkitError(f"data file {data} does not exist")
    data = data if data in (None, "hub") else str(Path(data).expanduser())
    key = str(name_or_path)
    aliases = _aliases()
    if key in aliases:
        return _from_spec(aliases[key], _definitions()[aliases[key]], data)
    path = Path(key).expanduser()
    if path.is_file():
        from .sources import user_task

        return user_task(path, data)
    raise LaserkitError(f"unknown task {key!r}: use one of {', '.join(_definitions())}, or a task "
                        "file (.yaml/.json declaration, or .json/.jsonl/.csv data)")


def task_declaration(path: Path) -> dict | None:
    """The declaration in a .yaml/.json task file, or None when the file is plain data."""
    text = path.read_text(encoding="utf-8")
    try:
        obj = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise LaserkitError(f"task file {path} is not valid {path.suffix[1:].upper()}: "
                            f"{first_line(e)}") from None
    if path.suffix in (".yaml", ".yml"):
        if not isinstance(obj, dict):
            raise LaserkitError(f"task file {path}: expected a mapping of task settings")
        return obj
    return obj if isinstance(obj, dict) and "kind" in obj else None
