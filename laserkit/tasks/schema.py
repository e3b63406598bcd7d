"""Validation of task definitions against the schema in spec.py: the same code for built-in
definitions and users' task files, so a wrong key is named, with what is accepted, everywhere.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core.errors import LaserkitError
from .formats import resolve_reader
from .kinds import declarable
from .spec import HUB_ONLY, LOCATIONS, SourceSpec, Task, source_fields


def task_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(Task) if not f.name.startswith("_")]


def source_keys() -> list[str]:
    return source_fields()


def _unknown(where: str, keys: set, accepted: list[str]) -> LaserkitError:
    bad = ", ".join(repr(k) for k in sorted(map(str, keys)))
    return LaserkitError(
        f"{where}: unknown key{'s' if len(keys) > 1 else ''} {bad}; accepted: "
        f"{', '.join(accepted)} (docs/tasks.md, `laserkit tasks --schema`)"
    )


def check_source(spec: object, location: str, where: str, inherit: str = "fields") -> dict:
    """A source spec, checked: known keys (SourceSpec's and its reader's own), the keys of its
    location only, and a reader that exists. Returned as a plain dict for the reader."""
    where = f"{where}: sources.{location}"
    if not isinstance(spec, dict):
        raise LaserkitError(
            f"{where}: expected a mapping of reader settings, got {type(spec).__name__}"
        )
    reader = resolve_reader(str(spec.get("reader", inherit)), where)
    own = dict(getattr(reader, "keys", {}) or {})
    # a local spec may be a packaged one reused through a YAML anchor: its 'file' is ignored
    accepted = [
        k
        for k in source_keys()
        if (k != "file" or location != "hub") and (k not in HUB_ONLY or location == "hub")
    ]
    unknown = set(spec) - set(accepted) - set(own)
    if unknown:
        raise _unknown(where, unknown, accepted + sorted(own))
    if location == "hub" and not spec.get("path"):
        raise LaserkitError(f"{where}: needs 'path' (the hub dataset id)")
    if location == "packaged" and not spec.get("file"):
        raise LaserkitError(f"{where}: needs 'file' (under laserkit/data/bigbench)")
    return dict(spec)


def parse_task(name: str, mapping: object, where: str, base_dir: Path | None = None) -> Task:
    """A Task from a definition mapping, validated. Reader keys at the top level (the flat form
    of a task file) are the ``local`` source; ``data`` is resolved against ``base_dir``."""
    if not isinstance(mapping, dict):
        raise LaserkitError(
            f"{where}: task {name!r} must be a mapping of settings, got {type(mapping).__name__}"
        )
    where = f"{where}: task {name!r}"
    spec = dict(mapping)
    tkeys, skeys = set(task_keys()), set(source_keys()) - set(HUB_ONLY) - {"file"}
    own = set(getattr(resolve_reader(str(spec.get("reader", "fields")), where), "keys", {}) or {})
    flat = {k: spec.pop(k) for k in list(spec) if k not in tkeys and (k in skeys or k in own)}
    unknown = set(spec) - tkeys
    if unknown:
        accepted = task_keys() + sorted(skeys)
        raise _unknown(where, unknown, accepted)
    if "kind" not in spec:
        raise LaserkitError(f"{where}: missing 'kind' (one of {', '.join(declarable())})")
    sources = spec.get("sources") or {}
    if not isinstance(sources, dict):
        raise LaserkitError(f"{where}: sources must be a mapping of packaged / local / hub")
    bad = set(sources) - set(LOCATIONS)
    if bad:
        raise _unknown(f"{where}: sources", bad, list(LOCATIONS))
    sources = dict(sources)
    if flat:
        if "local" in sources:
            raise LaserkitError(
                f"{where}: reader keys {sorted(flat)} at the top level and "
                "sources.local: use one of the two forms"
            )
        sources["local"] = flat
    inherit = (
        str((sources.get("local") or {}).get("reader", "fields"))
        if isinstance(sources.get("local"), dict)
        else "fields"
    )  # the hub reads as local does
    for loc, s in list(sources.items()):
        sources[loc] = (
            [check_source(x, loc, where, inherit) for x in s]
            if isinstance(s, list)
            else check_source(s, loc, where, inherit)
        )
    data = spec.pop("data", None)
    if data is not None:
        if "local" not in sources:
            sources["local"] = {"reader": "fields"}
        p = Path(str(data)).expanduser()
        data = str((base_dir / p).resolve() if base_dir is not None and not p.is_absolute() else p)
    for key in ("aliases",):
        if not isinstance(spec.get(key, []), list):
            raise LaserkitError(f"{where}: {key} must be a list")
    if "topk" in spec and not isinstance(spec["topk"], list | tuple):
        raise LaserkitError(f"{where}: topk must be a list of whole numbers")
    chat = spec.get("chat_template")
    if isinstance(chat, str) and base_dir is not None and chat.endswith((".jinja", ".j2")):
        chat = str((base_dir / chat).resolve()) if not Path(chat).is_absolute() else chat
        spec["chat_template"] = chat
    fields_ = {k: v for k, v in spec.items() if k not in ("sources", "name")}
    return Task(
        name=str(spec.get("name", name)), sources=source_specs(sources), data=data, **fields_
    )


def source_specs(sources: dict) -> tuple[SourceSpec, ...]:
    """Checked ``sources`` mappings as SourceSpecs, in the file's order: a list gives one spec
    per item, and a hub spec inherits the local spec's keys (the hub reads as local does)."""
    local = sources.get("local") if isinstance(sources.get("local"), dict) else {}
    inherited = {k: v for k, v in (local or {}).items() if k != "file"}
    return tuple(
        SourceSpec.of({**inherited, **x} if loc == "hub" else x, loc)
        for loc, s in sources.items()
        for x in (s if isinstance(s, list) else [s])
    )


def schema_rows() -> list[tuple[str, str, str, str, str]]:
    """(section, key, kinds, default, meaning) for every key: `laserkit tasks --schema`."""
    rows = []
    for section, cls in (("task", Task), ("source", SourceSpec)):
        for f in dataclasses.fields(cls):
            if f.name.startswith("_") or f.metadata.get("internal"):
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            else:
                assert f.default_factory is not dataclasses.MISSING  # every key has a default
                default = f.default_factory()
            rows.append(
                (
                    section,
                    f.name,
                    f.metadata["kinds"],
                    "" if default in (None, "", [], {}, ()) else repr(default),
                    f.metadata["doc"],
                )
            )
    return rows
