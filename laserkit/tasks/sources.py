"""Where a task's data comes from: the packaged BIG-bench files (offline), a local file in the
dataset's original format (``--data``), or the Hugging Face hub (``datasets``, imported only
when it is needed, so offline use never touches the network).

Order without ``--data``: packaged files if the task has them, else the hub. ``--data hub``
forces the hub. Unavailable data is one LaserkitError saying where to get it.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, replace
from pathlib import Path

from ..core.errors import LaserkitError, first_line
from ..core.hub import hub_reachable
from .formats import resolve_reader
from .kinds import kind_of
from .matching import check_answers
from .spec import Example, SourceSpec, Task

PACKAGED = Path(__file__).resolve().parent.parent / "data" / "bigbench"


def read_file(path: Path) -> tuple[list, dict]:
    """Records and file-level metadata from .json (a list, or an object with 'examples' or
    'data'), .jsonl, .csv or .txt (one record {"text": whole file})."""
    path = Path(path)
    suffix = path.suffix.lower()
    text = decode_text(path)
    if suffix == ".txt":
        return [{"text": text}], {}
    if suffix == ".csv":
        return read_csv(text, path), {}
    if suffix == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                records.append(parse_json(line, f"{path} line {n}"))
        return records, {}
    if suffix == ".json":
        obj = parse_json(text, str(path))
        if isinstance(obj, list):
            return obj, {}
        for key in ("examples", "data"):
            if isinstance(obj, dict) and isinstance(obj.get(key), list):
                return obj[key], {k: v for k, v in obj.items() if k != key}
        raise LaserkitError(
            f"{path}: expected a JSON list of records, or an object with an 'examples' list"
        )
    raise LaserkitError(
        f"{path}: unsupported data file type {suffix or '(none)'}; use .json, .jsonl, .csv or .txt"
    )


def decode_text(path: Path, what: str = "") -> str:
    """A file's text as UTF-8, or one line saying it is not."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise LaserkitError(f"cannot read {what}{path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LaserkitError(
            f"{what}{path} is not UTF-8 text (byte 0x{data[e.start]:02x} at "
            f"offset {e.start}); save it as UTF-8"
        ) from None


def parse_json(text: str, where: str) -> object:
    """JSON, or one line naming where it is invalid (or nested too deeply to read)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LaserkitError(f"{where}: invalid JSON ({e.msg}, line {e.lineno})") from None
    except RecursionError:
        raise LaserkitError(
            f"{where}: JSON nested too deeply to read (Python reads about 1,000 "
            "levels); flatten the records"
        ) from None


def read_csv(text: str, path: Path) -> list[dict]:
    """CSV records; a cell longer than the csv module's limit (131,072 characters) or a broken
    row is named with its line."""
    reader = csv.DictReader(text.splitlines())
    try:
        return list(reader)
    except csv.Error as e:
        raise LaserkitError(
            f"{path} line {reader.line_num + 1}: {e}; CSV cells are read up to "
            f"{csv.field_size_limit():,} characters: put longer texts in .jsonl "
            "or .json"
        ) from None


def _read(records: list, spec: SourceSpec, task: Task, meta: dict, origin: str) -> list[Example]:
    reader = resolve_reader(str(spec.reader), f"task {task.name!r}")
    examples = reader(records, spec, task.kind, meta, origin)
    mode = kind_of(task.kind).answer_mode(task)
    if mode is not None:
        one_each = len(examples) == len(records)  # a record per example: name its number
        for i, ex in enumerate(examples):
            where = f"{origin} record {i} (id {ex.id})" if one_each else f"{origin} example {ex.id}"
            check_answers(ex.answers, mode, where)
    return examples


def _unavailable(task: Task, why: str) -> LaserkitError:
    where = f"download it from {task.url} and " if task.url else ""
    return LaserkitError(f"no data for task {task.name!r} ({why}): {where}pass --data FILE")


def load_hub(task: Task) -> list[Example]:
    """Records from the Hugging Face hub; every hub spec inherits the local reader spec."""
    hubs = task.sources_at("hub")
    if not hubs:
        raise _unavailable(task, "it has no Hugging Face hub source")
    if not hub_reachable():
        raise _unavailable(task, "the Hugging Face hub is not reachable (offline?)")
    try:
        import datasets
    except ImportError:
        raise _unavailable(task, "the 'datasets' package is not installed") from None
    parts: list[list[Example]] = []
    for hub in hubs:
        try:
            ds = datasets.load_dataset(hub.path, hub.name, split=hub.split)
        except Exception as e:  # offline, unknown id, script datasets: all one line
            raise _unavailable(
                task, f"cannot load {hub.path} from the hub: {first_line(e, 200)}"
            ) from None
        records = ds.select(range(min(hub.limit, len(ds)))) if hub.limit is not None else ds
        exs = _read([dict(r) for r in records], hub, task, {}, f"hub:{hub.path}")
        parts.append(_prefixed(exs, f"{hub.path}/{hub.split}", len(hubs) > 1))
    return combine(parts, task.interleave)


def combine(parts: list[list[Example]], interleave: bool) -> list[Example]:
    """Several sources' examples as one list: one source after another, or (``interleave``) in
    turn, so that the first 20% (validation) is not all from the first source."""
    if not interleave:
        return [e for part in parts for e in part]
    longest = max(map(len, parts), default=0)
    return [part[i] for i in range(longest) for part in parts if i < len(part)]


def _prefixed(examples: list[Example], source: str, several: bool) -> list[Example]:
    """Ids stay unique when a task reads several files: "file:id"."""
    return [replace(e, id=f"{source}:{e.id}") for e in examples] if several else examples


_CACHE: dict[tuple, list[Example]] = {}


def load_examples(task: Task) -> list[Example]:
    """The task's examples: those it holds in memory (``task._examples``), else its data,
    parsed once per process for the same definition and file (a search evaluates the same task
    hundreds of times; Examples are immutable)."""
    if task._examples is not None:
        return list(task._examples)
    stamp = os.stat(task.data).st_mtime_ns if task.data and task.data != "hub" else None
    key = (
        task.name,
        task.kind,
        task.match,
        json.dumps([asdict(s) for s in task.sources], sort_keys=True, default=str),
        task.data,
        stamp,
        task.interleave,
    )
    if key not in _CACHE:
        _CACHE[key] = _load_examples(task)
    return list(_CACHE[key])


def _load_examples(task: Task) -> list[Example]:
    """From the kind itself (lm-eval), --data, the packaged files, or the hub (in that order)."""
    own = kind_of(task.kind).load(task)
    if own is not None:
        examples = own
    elif task.data == "hub":
        examples = load_hub(task)
    elif task.data:
        local = task.sources_at("local")
        if not local:
            raise LaserkitError(f"task {task.name!r} does not read local files")
        records, meta = read_file(Path(task.data))
        examples = _read(records, local[0], task, meta, Path(task.data).name)
    elif packaged := task.sources_at("packaged"):
        files = [
            (spec, str(f))
            for spec in packaged
            for f in (spec.file if isinstance(spec.file, list) else [spec.file])
        ]
        parts = []
        for spec, f in files:
            records, meta = read_file(PACKAGED / f)
            parts.append(
                _prefixed(_read(records, spec, task, meta, f), Path(f).stem, len(files) > 1)
            )
        examples = combine(parts, task.interleave)
    else:
        examples = load_hub(task)
    if not examples:
        raise LaserkitError(f"task {task.name!r}: the data holds no usable examples")
    return examples
