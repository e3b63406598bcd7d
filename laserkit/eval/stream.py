"""``laserkit eval --out DIR`` that keeps what it scored: the examples are scored in chunks and
each chunk's records are appended to ``DIR/records.partial.jsonl`` (flushed and fsync'd) as it
finishes, so an evaluation that is stopped (Ctrl-C, a killed job, a full hour of generation cut
short) keeps its records, and the same command run again continues after them. What the
evaluation is (model weights, examples, options) is recorded in ``DIR/evaluation.json``; a
rerun that differs in any of them is refused in one line rather than mixing two evaluations.
When every example is scored, ``records.jsonl`` and ``summary.json`` are published together
(atomically, as before) and the partial files go.

The summary of a chunked evaluation is the one evaluate() gives in one pass: every selectable
metric of the chunked kinds is a mean over records, so chunk means weighted by their counts
give it (up to float summation order). Perplexity, whose windows and chunks span examples, is
scored in one chunk.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ..core.errors import LaserkitError
from ..core.fileio import atomic_write_text
from ..tasks.kinds import kind_of
from ..tasks.sources import load_examples
from .evaluate import EvalResult, evaluate
from .intervals import score_interval
from .splits import shuffle_examples, split_examples

PARTIAL = "records.partial.jsonl"
IDENTITY = "evaluation.json"
CHUNK = 32  # examples scored between two appends (a stop loses at most this many)
# summary keys that are means over a subset of the records, and which records count
_MEANS_OF = {"part_recall": lambda r: "parts_found" in r}


def evaluate_to(
    out: Path,
    model,
    tokenizer,
    task,
    *,
    split: str = "all",
    limit: int | None = None,
    seed: int | None = None,
    chunk: int = CHUNK,
    log=None,
    **kw: Any,
) -> EvalResult:
    """evaluate() with its records appended to ``out`` as they are scored; continues a stopped
    evaluation of the same model, examples and options in ``out``. ``kw`` goes to evaluate()."""
    from ..core.fingerprint import data_fingerprint, weights_fingerprint  # noqa: PLC0415

    available = load_examples(task)
    examples = shuffle_examples(available, seed)
    if limit is not None:
        if limit < 1:
            raise LaserkitError("--limit must be at least 1")
        examples = examples[:limit]
    n_available = len(available)
    examples = split_examples(examples, split)
    if not examples:
        raise LaserkitError(f"task {task.name!r}: split {split!r} has no examples")
    ident = {
        "task": task.name,
        "kind": task.kind,
        "split": split,
        "limit": limit,
        "seed": seed,
        "weights": weights_fingerprint(model),
        "data": data_fingerprint(examples),
        "options": {k: v for k, v in sorted(kw.items()) if k != "progress"},
    }
    out = Path(out)
    made = not out.exists()
    done = _resume(out, ident)
    if done and log is not None:
        log(
            f"continuing the evaluation in {out}: {len(done)} of {len(examples)} examples "
            "were scored before"
        )
    # one chunk where the score is not a mean over examples (perplexity, lm-eval's corpus metrics)
    size = chunk if kind_of(task.kind).chunked else len(examples)
    parts: list[EvalResult] = []
    start = len(done)
    try:
        for lo in range(start, len(examples), size):
            part = dataclasses.replace(task, _examples=examples[lo : lo + size])
            result = evaluate(model, tokenizer, part, split="all", **kw)
            _append(out / PARTIAL, result.records, result.summary)
            parts.append(result)
    except BaseException:
        if not done and not parts:  # nothing was kept: leave no trace of this evaluation
            _forget(out, made)
        raise
    records = [r for r, _ in done] + [r for p in parts for r in p.records]
    summaries = _chunk_summaries(done) + [p.summary for p in parts if p.summary]
    summary = _combine(summaries, records, task)
    summary.update(split=split, limit=limit, seed=seed, n_available=n_available)
    return EvalResult(summary=summary, records=records)


def _resume(out: Path, ident: dict) -> list[tuple[dict, dict | None]]:
    """The records a stopped evaluation of the same identity kept in ``out`` (with the chunk
    summary on each chunk's last record); starts a new one otherwise."""
    path = out / IDENTITY
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = None
        if stored != ident:
            what = _what_differs(stored or {}, ident)
            raise LaserkitError(
                f"--out {out} holds a stopped evaluation of another {what}; "
                "repeat its command to continue it, or give another --out"
            )
        return _read_partial(out / PARTIAL)
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTIAL).unlink(missing_ok=True)
    atomic_write_text(path, json.dumps(ident, indent=1) + "\n")
    return []


def _forget(out: Path, made: bool) -> None:
    """Remove what a new evaluation created before its first chunk was kept: its files, and
    ``out`` itself if it made it (a failed eval leaves --out as it was)."""
    for name in (PARTIAL, IDENTITY):
        (out / name).unlink(missing_ok=True)
    if made:
        try:
            out.rmdir()
        except OSError:
            pass


def _what_differs(stored: dict, ident: dict) -> str:
    names = {
        "weights": "model (its weights differ)",
        "data": "set of examples (the data changed)",
        "task": "task",
        "options": "set of options",
    }
    diff = [names.get(k, f"--{k}") for k in ident if stored.get(k) != ident[k]]
    return ", ".join(diff) or "kind"


def _append(path: Path, records: list[dict], summary: dict) -> None:
    """One chunk's records, the last carrying the chunk's summary, appended and fsync'd."""
    lines = [
        json.dumps(
            {"record": r, **({"chunk": summary} if i == len(records) - 1 else {})},
            ensure_ascii=False,
        )
        for i, r in enumerate(records)
    ]
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(ln + "\n" for ln in lines))
        f.flush()
        os.fsync(f.fileno())


def _read_partial(path: Path) -> list[tuple[dict, dict | None]]:
    """Complete chunks only: a chunk cut short by a kill (no summary line yet, or a torn last
    line) is dropped and scored again; the file is cut back to the last complete chunk."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    kept: list[tuple[dict, dict | None]] = []
    good, pending, offset = 0, [], 0
    for line in text.splitlines(keepends=True):
        offset += len(line.encode("utf-8"))
        try:
            item = json.loads(line)
        except ValueError:
            break
        pending.append((item["record"], item.get("chunk")))
        if "chunk" in item:
            kept += pending
            pending, good = [], offset
    with open(path, "r+b") as f:
        f.truncate(good)
    return kept


def _chunk_summaries(done: list[tuple[dict, dict | None]]) -> list[dict]:
    return [s for _, s in done if s is not None]


def _combine(summaries: list[dict], records: list[dict], task) -> dict:
    """The one-pass summary from the chunks': metrics that are means over records become the
    count-weighted mean of the chunks' means; counts and times add up."""
    if len(summaries) == 1:
        return dict(summaries[0])
    out = dict(summaries[-1])
    n = sum(s["n"] for s in summaries)
    for key, value in summaries[-1].items():
        if (
            key in ("n", "n_available", "limit", "seed", "split")
            or isinstance(value, bool)
            or not isinstance(value, (int, float))
        ):
            continue
        if all(s.get(key) == value for s in summaries):
            continue  # a setting (max_new_tokens) or a mean that agrees
        if key in ("truncated", "seconds", "n_tokens"):
            out[key] = sum(s.get(key, 0) for s in summaries)
            continue
        if key in _MEANS_OF:
            weights = [
                sum(1 for r in _chunk_records(records, summaries, i) if _MEANS_OF[key](r))
                for i in range(len(summaries))
            ]
        else:
            weights = [s["n"] for s in summaries]
        total = sum(weights)
        out[key] = (
            sum(w * s[key] for w, s in zip(weights, summaries, strict=True) if w) / total
            if total
            else value
        )
    out["n"] = n
    out["score"] = out.get(task.metric, out.get("score"))
    out["ci95"] = score_interval(records, task.metric)  # intervals are not means: from all records
    if "log_loss_ci95" in out:
        out["log_loss_ci95"] = score_interval(records, "log_loss")
    return out


def _chunk_records(records: list[dict], summaries: list[dict], i: int) -> list[dict]:
    lo = sum(s["n"] for s in summaries[:i])
    return records[lo : lo + summaries[i]["n"]]
