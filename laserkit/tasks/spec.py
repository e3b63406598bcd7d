"""The task schema, once: ``Task`` (what is scored, how) and ``SourceSpec`` (where the data is
and how a reader turns it into ``Example``s). Built-in definitions (``definitions/*.yaml``) and
user task files are validated against these two dataclasses by schema.py (like lm-eval's
``TaskConfig``), so a key means the same everywhere (docs/tasks.md).

Readers, sources, schema and the registry import it, never the reverse: a task's examples are
``sources.load_examples(task)``. What differs between kinds of task is asked of the kind object
(``kinds.kind_of(task.kind)``: kinds/*.py, registered by name in ``KINDS`` below and imported
on first use), never decided here by the kind's name.

To add a key: add one field with ``_f(default, doc, kinds)`` to ``Task`` or ``SourceSpec``; the
validation, ``laserkit tasks --schema`` and the error messages follow from it. A reader may
also declare keys of its own (``formats.reader_keys``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..core.errors import LaserkitError
from ..core.registry import Registry
from .matching import MATCH_MODES


@dataclass(frozen=True)
class Example:
    """One evaluation item; which fields are used depends on the task kind."""

    id: str
    prompt: str = ""
    choices: tuple[str, ...] = ()  # choice: the candidate answers
    gold: tuple[int, ...] = ()  # choice: indices of the correct candidates
    answers: tuple = ()  # generate / next_token: the gold answer's items, as the data gave them
    chosen: str = ""  # semantic
    rejected: str = ""  # semantic
    text: str = ""  # perplexity
    group: str = ""  # items that belong together (a fact and its paraphrases): never split apart
    system: str | None = None  # the example's own system turn (chat templates); None: the task's


# name → task kind class (kinds/*.py, a TaskKind each), imported the first time it is used;
# another package adds a kind with @KINDS.register("name") or the entry-point group
# laserkit.task_kinds (docs/tasks.md)
KINDS: Registry[Any] = Registry("task kind", "task_kinds")
for _name in ("choice", "next_token", "generate", "perplexity", "semantic"):
    KINDS.register(_name, f"laserkit.tasks.kinds.{_name}:Kind")
KINDS.register("lm-eval", "laserkit.tasks.kinds.lm_eval:Kind")
LOWER_IS_BETTER = {"log_loss", "perplexity"}


def _kind(name: str) -> Any:
    """The kind object (kinds.kind_of, typed, is the public way to it)."""
    return KINDS.get(name)()


def declarable() -> list[str]:
    """The kinds a task definition may name (lm-eval tasks come from --task lm-eval:NAME)."""
    return [n for n in KINDS.names() if KINDS.get(n).declarable]


LOCATIONS = ("packaged", "local", "hub")
CHUNKINGS = ("fixed", "sliding")


def _f(default, doc: str, kinds: str = "all", **kw):
    meta = {"doc": doc, "kinds": kinds}
    if isinstance(default, type):  # list / dict: a fresh one per task
        return field(default_factory=default, metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class SourceSpec:
    """One data source of a task: the keys a reader understands. ``file`` is for packaged data;
    ``path``/``name``/``split``/``limit`` for the hub; the rest for every location."""

    reader: str = _f(
        "fields",
        "how records become examples: fields, bigbench, counterfact, "
        "truthfulqa, text, or your own as module:function",
    )
    prompt: str | None = _f(
        None, "prompt template; {field} is a record's field (default {prompt}; bigbench {input})"
    )
    id: str = _f("id", "field holding the example id (default: the record's position)")
    answer: str = _f(
        "answer",
        "field holding the answer (choice: a choice or its index; "
        "generate: see 'answers' in docs/tasks.md)",
        "choice generate next_token",
    )
    choices: list | None = _f(None, "the same answer choices for every record", "choice")
    choices_field: str = _f(
        "choices", "field holding a record's own choices (a list, a JSON list or a|b|c)", "choice"
    )
    label_map: dict | None = _f(
        None, "maps raw labels to choices, e.g. {SUPPORTS: 'true'}", "choice"
    )
    skip_unmapped: bool = _f(False, "skip records whose label is not in label_map", "choice")
    rename: dict | None = _f(None, "{field in the data: field the prompt uses}")
    chosen: str = _f("chosen", "field holding the preferred answer", "semantic")
    rejected: str = _f("rejected", "field holding the rejected answer", "semantic")
    text: str = _f("text", "field holding the text", "perplexity")
    system: str | None = _f(
        None,
        "field holding each record's system turn (with a chat "
        "template; records without it use system_prompt)",
        "choice generate next_token semantic",
    )
    file: str | list | None = _f(
        None, "packaged: file(s) under laserkit/data/bigbench (ignored in a local spec)"
    )
    path: str | None = _f(None, "hub only: the dataset id")
    name: str | None = _f(None, "hub only: the dataset config")
    split: str = _f("train", "hub only: the split")
    limit: int | None = _f(None, "hub only: read the first N records")
    # not keys of a task file: where the spec sits in ``sources``, and the keys of its reader's
    # own (``formats.reader_keys``), which readers read as ``spec.own[key]``
    location: str = field(default="local", metadata={"internal": True})
    own: dict = field(default_factory=dict, metadata={"internal": True})

    @classmethod
    def of(cls, mapping: dict, location: str) -> SourceSpec:
        """From a checked mapping (schema.check_source): SourceSpec's keys become fields, the
        others are the reader's own keys."""
        names = set(source_fields())
        return cls(
            location=location,
            own={k: v for k, v in mapping.items() if k not in names},
            **{k: v for k, v in mapping.items() if k in names},
        )


def source_fields() -> list[str]:
    """The keys of a source spec in a task file (SourceSpec's fields but its bookkeeping)."""
    return [f.name for f in fields(SourceSpec) if not f.metadata.get("internal")]


HUB_ONLY = ("path", "name", "split", "limit")


@dataclass
class Task:
    """A declarative task; every field is a key of a task definition (docs/tasks.md). Its data
    is read by ``sources.load_examples(task)``; ``_examples`` holds examples given in memory
    instead (a chunk of a streamed evaluation, the head of a split)."""

    name: str = _f("", "the task's name (default: the mapping key, or the file's name)")
    kind: str = _f(
        "", "how it is scored: choice, next_token, generate, perplexity, semantic (required)"
    )
    description: str = _f("", "one line for `laserkit tasks`")
    aliases: list = _f(list, "other names for a built-in task")
    url: str = _f("", "where to get the full original data (shown when it is missing)")
    data: str | None = _f(
        None, "a data file (.json/.jsonl/.csv/.txt), relative to the task file; --data overrides it"
    )
    sources: tuple[SourceSpec, ...] = _f(
        tuple,
        "packaged / local / hub: a source spec (or a list of them for "
        "several files); the flat form puts the local spec's keys at top level",
    )
    interleave: bool = _f(
        False,
        "several hub sources or packaged files: take their examples "
        "in turn (the first of each, then the second, ...) so that validation "
        "(the first 20%) holds some of each; default: one after another",
    )
    match: str = _f(
        "contains",
        "generate: how the generation is judged: "
        + ", ".join(MATCH_MODES)
        + " (the LASER reference's rule)",
        "generate",
    )
    metric: str | None = _f(
        None,
        "the score used for selection (default: accuracy; f1 for "
        "match: f1; perplexity; semantic_score)",
    )
    answer_prefix: str = _f(
        " ",
        "put between prompt and answer when neither has whitespace (raw prompts)",
        "choice generate next_token",
    )
    max_new_tokens: int | None = _f(
        None,
        "generation length (generate 15; semantic 512, laserRMT's output_length)",
        "generate semantic",
    )
    topk: tuple = _f((1, 5, 10), "also report top-k accuracy for these k", "next_token")
    chunking: str = _f(
        "sliding",
        "perplexity: fixed (laserRMT: each text cut into "
        "non-overlapping chunks of max_length tokens, the tail dropped) or sliding "
        "(a window moved by stride)",
        "perplexity",
    )
    max_length: int | None = _f(
        None,
        "window (sliding; default min(model context, 2048)) or "
        "chunk length (fixed; default 128, laserRMT's) in tokens",
        "perplexity",
    )
    stride: int | None = _f(None, "window stride (sliding; default: half the window)", "perplexity")
    chat_template: str | None = _f(
        None,
        "none (raw prompt), model (the tokenizer's template), "
        "chatml, a Jinja template, or a .jinja file (default: none; "
        "semantic: model)",
        "choice generate next_token semantic",
    )
    system_prompt: str | None = _f(
        None, "a system message, with a chat template", "choice generate next_token semantic"
    )
    _examples: list | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        if self.kind not in KINDS or not KINDS.get(self.kind).declarable:
            kinds = ", ".join(declarable())
            if not self.kind:
                raise LaserkitError(f"{where}: missing 'kind' (one of {kinds})")
            raise LaserkitError(f"{where}: unknown kind {self.kind!r}; use one of {kinds}")
        kind = _kind(self.kind)
        self.topk = tuple(_int(k, "topk", where) for k in self.topk)
        if self.match not in MATCH_MODES:
            raise LaserkitError(
                f"{where}: unknown match {self.match!r}; use one of {', '.join(MATCH_MODES)}"
            )
        if self.max_new_tokens is None:
            self.max_new_tokens = kind.max_new_tokens
        _int(self.max_new_tokens, "max_new_tokens", where)
        if self.chunking not in CHUNKINGS:
            raise LaserkitError(
                f"{where}: unknown chunking {self.chunking!r}; use one of {', '.join(CHUNKINGS)}"
            )
        if self.chat_template is None:
            self.chat_template = kind.chat_template
        if not isinstance(self.chat_template, str) or not self.chat_template.strip():
            raise LaserkitError(
                f"{where}: chat_template must be none, model, chatml, a Jinja template or a file"
            )
        t = self.chat_template
        if (
            t not in ("none", "model", "chatml")
            and "{%" not in t
            and "{{" not in t
            and not Path(t).expanduser().is_file()
        ):
            raise LaserkitError(
                f"{where}: chat_template {t[:60]!r} is not none, model, chatml, "
                "a Jinja template or an existing file"
            )
        if not kind.chat and self.chat_template != "none":
            raise LaserkitError(
                f"{where}: a {self.kind} task scores raw text; chat_template must be none"
            )
        if self.system_prompt is not None and self.chat_template == "none":
            raise LaserkitError(
                f"{where}: system_prompt needs a chat template "
                "(chat_template: model, chatml or a Jinja template)"
            )
        allowed = self.metrics()
        if self.metric is None:
            self.metric = kind.default_metric(self)
        if self.metric not in allowed:
            raise LaserkitError(
                f"{where}: metric {self.metric!r} is not reported by a "
                f"{self.kind} task; use one of {', '.join(allowed)}"
            )

    def metrics(self) -> tuple[str, ...]:
        """The metrics this task reports that can be selected on."""
        return _kind(self.kind).metrics(self)

    @property
    def higher_is_better(self) -> bool:
        return _kind(self.kind).higher_is_better(self)

    @property
    def forward_only(self) -> bool:
        """Scoring is forward passes over fixed inputs (what the prefix cache needs)."""
        return _kind(self.kind).forward_only(self)

    def sources_at(self, location: str) -> tuple[SourceSpec, ...]:
        """The source specs of one location (packaged, local or hub), in the task's order."""
        return tuple(s for s in self.sources if s.location == location)

    def where(self) -> str:
        """A short description of where the data comes from, for `laserkit tasks`."""
        known = _kind(self.kind).where(self)
        if known is not None:
            return known
        if self.data:
            return f"file {self.data}"
        parts = []
        if packaged := self.sources_at("packaged"):
            files = [
                f for s in packaged for f in (s.file if isinstance(s.file, list) else [s.file])
            ]
            parts.append("packaged BIG-bench: " + ", ".join(map(str, files)))
        if hubs := self.sources_at("hub"):
            parts.append("hub: " + ", ".join(str(h.path) for h in hubs))
        if self.sources_at("local"):
            parts.append("--data FILE" + (f" ({self.url})" if self.url else ""))
        return "; ".join(parts)


def check_max_new_tokens(n: int | None) -> None:
    """A generation length given on the command line (None: the task's) must be at least 1: with
    0 nothing is generated and a generation task scores an empty text."""
    if n is not None and n < 1:
        raise LaserkitError(f"--max-new-tokens must be at least 1, not {n}")


def _int(v: object, key: str, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise LaserkitError(f"{where}: {key} must be a whole number ≥ 0, not {v!r}")
    return v
