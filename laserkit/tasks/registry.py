"""Which tasks exist: the built-in definitions (``definitions/*.yaml``) and users' task files,
both validated by the one schema in spec.py (docs/tasks.md).

Adding a dataset means adding a few lines of YAML, not a script per model × dataset (the LASER
reference has about thirty of those).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import yaml

from ..core.errors import LaserkitError, first_line
from .kinds.lm_eval import is_lm_eval, lm_eval_task
from .schema import parse_task
from .sources import decode_text, parse_json, read_file
from .spec import Example, SourceSpec, Task

DEFINITIONS = Path(__file__).parent / "definitions"
DECLARATIONS = (".yaml", ".yml", ".json")

__all__ = ["Example", "Task", "get_task", "list_tasks", "task_declaration", "user_task"]


@lru_cache(maxsize=1)
def _definitions() -> dict[str, Task]:
    """name → Task, from every YAML file under definitions/, each checked against the schema."""
    defs: dict[str, Task] = {}
    for path in sorted(DEFINITIONS.glob("*.yaml")):
        for name, spec in (yaml.safe_load(path.read_text()) or {}).items():
            defs[name] = parse_task(name, spec, path.name)
    return defs


def _aliases() -> dict[str, str]:
    out = {}
    for name, task in _definitions().items():
        out[name] = name
        for alias in task.aliases:
            out[alias] = name
    return out


def _fresh(task: Task, data: str | None = None) -> Task:
    """A copy callers may change (the definitions are parsed once)."""
    return replace(task, data=data if data is not None else task.data, _examples=None)


def list_tasks() -> list[Task]:
    """Every built-in task, in definition order."""
    return [_fresh(t) for t in _definitions().values()]


def get_task(name_or_path: str | Path | Task, data: str | Path | None = None) -> Task:
    """A built-in task by name (or alias), or a user's task file (a YAML/JSON declaration, or a
    JSON/JSONL/CSV data file with conventional fields; ``FILE#NAME`` picks one task of a file
    that declares several). ``data`` overrides the data source: a local file in the task's
    original format, or ``"hub"`` for the Hugging Face hub."""
    if isinstance(name_or_path, Task):
        return (
            name_or_path if data is None else replace(name_or_path, data=str(data), _examples=None)
        )
    if is_lm_eval(name_or_path):  # data: the --include-path directory of the user's YAML tasks
        return lm_eval_task(str(name_or_path), None if data is None else str(data))
    data = None if data is None else str(data)
    if data not in (None, "hub") and not Path(data).expanduser().is_file():
        raise LaserkitError(f"data file {data} does not exist")
    data = data if data in (None, "hub") else str(Path(data).expanduser())
    key = str(name_or_path)
    aliases = _aliases()
    if key in aliases:
        return _fresh(_definitions()[aliases[key]], data)
    file, _, pick = key.partition("#") if not Path(key).expanduser().is_file() else (key, "", "")
    path = Path(file).expanduser()
    if path.is_file():
        return user_task(path, data, pick or None)
    raise LaserkitError(
        f"unknown task {key!r}: use one of {', '.join(_definitions())}, or a task "
        "file (.yaml/.json declaration, or .json/.jsonl/.csv data; docs/tasks.md)"
    )


def task_declaration(path: Path) -> dict | None:
    """The declaration in a .yaml/.json task file, or None when the file is plain data."""
    text = decode_text(path, "task file ")
    try:
        obj = (
            yaml.safe_load(text)
            if path.suffix in (".yaml", ".yml")
            else parse_json(text, f"task file {path}")
        )
    except yaml.YAMLError as e:
        raise LaserkitError(
            f"task file {path} is not valid YAML{_at(e)}: "
            f"{getattr(e, 'problem', None) or first_line(e)}"
        ) from None
    except RecursionError:
        raise LaserkitError(f"task file {path}: nested too deeply to read") from None
    if path.suffix in (".yaml", ".yml"):
        if not isinstance(obj, dict):
            raise LaserkitError(f"task file {path}: expected a mapping of task settings")
        return obj
    if isinstance(obj, dict) and ("kind" in obj or _shipped_style(obj)):
        return obj
    return None


def _at(e: yaml.YAMLError) -> str:
    """ " at line L, column C" of a YAML error that knows where it is."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _shipped_style(decl: dict) -> bool:
    """``name: {kind: ..., ...}`` for one or more tasks, as in definitions/*.yaml."""
    return bool(decl) and "kind" not in decl and all(isinstance(v, dict) for v in decl.values())


def user_task(path: Path, data: str | None = None, pick: str | None = None) -> Task:
    """A task declared in a YAML/JSON file (flat, or in the style of the shipped definitions),
    or a bare JSON/JSONL/CSV data file whose records use the conventional fields: prompt +
    choices + answer (multiple choice), prompt + answer (open answer), prompt + chosen +
    rejected (semantic), or text (perplexity)."""
    decl = task_declaration(path) if path.suffix.lower() in DECLARATIONS else None
    where = f"task file {path}"
    if decl is None:
        records, _ = read_file(path)
        first = records[0] if records and isinstance(records[0], dict) else {}
        kind = (
            "choice"
            if "choices" in first
            else "semantic"
            if "chosen" in first
            else "perplexity"
            if "text" in first and "prompt" not in first
            else "generate"
        )
        return (
            parse_task(
                path.stem,
                {
                    "kind": kind,
                    "description": f"user data {path.name}",
                    "data": str(path.resolve()),
                },
                where,
            )
            if data is None
            else _with_data(parse_task(path.stem, {"kind": kind}, where), data)
        )
    name = path.stem
    if _shipped_style(decl):
        if pick is None and len(decl) > 1:
            raise LaserkitError(
                f"{where} declares tasks {', '.join(map(str, decl))}: pick one "
                f"with --task {path}#NAME"
            )
        if pick is not None and pick not in decl:
            raise LaserkitError(
                f"{where} has no task {pick!r}; it declares {', '.join(map(str, decl))}"
            )
        name = pick if pick is not None else next(iter(decl))
        decl = decl[name]
    elif pick is not None:
        raise LaserkitError(f"{where} declares one task; drop '#{pick}'")
    if (
        "kind" in decl
        and "data" not in decl
        and data is None
        and not (set(decl.get("sources") or {}) & {"packaged", "hub"})
    ):
        raise LaserkitError(
            f"{where}: missing 'data' (a .json/.jsonl/.csv/.txt file, relative to the task file)"
        )
    task = parse_task(str(name), decl, where, base_dir=path.parent)
    if task.data is not None and data is None and not Path(task.data).is_file():
        raise LaserkitError(f"{where}: data file {task.data} does not exist")
    return _with_data(task, data) if data is not None else task


def _with_data(task: Task, data: str) -> Task:
    sources = task.sources
    if data != "hub" and not task.sources_at("local"):
        sources += (SourceSpec(location="local"),)
    return replace(task, sources=sources, data=data, _examples=None)
