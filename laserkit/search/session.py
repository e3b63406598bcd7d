"""A run's life as library calls (the CLI only parses and prints): start or resume it and work
on it to the end, its status while it runs, its result once finished, and the per-example
records a paired comparison needs. Where a run lives is where.py; what a finished run writes
(report, chosen model) is outputs.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import LaserkitError
from ..core.fileio import atomic_write_text
from .config import RunConfig
from .migrate import adopt_legacy
from .rundir import created_dir
from .store import LEGACY_STUDY, TrialStore, default_url
from .trial import Result
from .where import POINTER


def check_workers(workers: int, device: str) -> None:
    """Several workers on this machine cannot share a ``map`` device: each would load the whole
    model within the same memory limits (docs/models.md, "Models larger than one device")."""
    from ..io.source import parse_device  # noqa: PLC0415 - torch

    if workers > 1 and parse_device(device).device_map is not None:
        raise LaserkitError(
            f"--workers {workers} with --device {device}: each worker would load the whole "
            "model within the same memory limits; use --workers 1 (the map spreads the one "
            "model over the devices), or `laserkit worker URL --run NAME` on other machines"
        )


def start(
    cfg: RunConfig,
    *,
    run_dir: Path,
    storage: str | None = None,
    run: str | None = None,
    resume: bool = False,
    workers: int = 1,
    device: str = "auto",
    loaded=None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict | None, TrialStore]:
    """Create (or with ``resume`` continue) a run and work on it to the end: in this process
    with the already ``loaded`` model, or with ``workers`` processes. Writes RUN_DIR/result.json
    and returns the result with the store. ``workers=0`` only creates the run (workers started
    elsewhere with ``laserkit worker URL --run NAME`` do the work): the result is then None."""
    from . import runner  # noqa: PLC0415
    from .runner import Context  # noqa: PLC0415 - torch
    from .store import without_password  # noqa: PLC0415

    check_workers(workers, device)
    run_dir = Path(run_dir)
    ctx = None
    if loaded is not None:  # everything is checked before anything is created
        ctx = Context(cfg, loaded.model, loaded.tokenizer)
        ctx.check()  # an edit this model cannot take fails now, not in a worker
        ctx.fingerprints()
    name = run or run_dir.resolve().name
    with created_dir(run_dir):  # removed again if the store cannot be created or opened
        if storage is None and run is None and resume and adopt_legacy(run_dir):
            name = LEGACY_STUDY
        store = TrialStore(storage or default_url(run_dir), name, create=cfg, resume=resume)
        if ctx is not None:
            store.check_fingerprints(ctx.fingerprints(), "--resume" if resume else "search")
            ctx.cfg = store.config
    if storage:  # never the password (docs/search.md): it comes from the environment
        atomic_write_text(
            run_dir / POINTER,
            json.dumps({"storage": without_password(storage), "run": name}) + "\n",
        )
    if workers <= 0:
        return None, store
    result = runner.run(
        store, workers=workers, device=device, ctx=ctx if workers <= 1 else None, progress=progress
    )
    write_result(result, run_dir)
    return result, store


def write_result(result: dict, run_dir: Path) -> Path:
    path = Path(run_dir) / "result.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path


def result_of(store: TrialStore) -> dict:
    """The stored result of a finished run (computed from its trials where it was not stored:
    a run directory from before results lived in the database)."""
    from .runner import finalize  # noqa: PLC0415

    result = store.result()
    if result is None and store.config.strategy in ("grid", "tpe"):  # needs no objective
        try:
            result = finalize(store)
        except LaserkitError:
            result = None
    if result is None:
        n = store.counts()
        raise LaserkitError(
            f"run {store.run!r} is not finished ({n['done']} trials done, "
            f"{n['running']} running, {n['waiting']} waiting): start a worker "
            f"or --resume it"
        )
    return result


def status(store: TrialStore) -> dict[str, Any]:
    """done / running / waiting / failed, the total expected, and the best so far on the
    decision split (by the paper's rule), from the database alone."""
    from .grid import pick  # noqa: PLC0415
    from .strategy import make_strategy  # noqa: PLC0415

    cfg = store.config
    done = store.results()
    counts = store.counts()
    decided = [
        r
        for r in done.values()
        if r.spec["split"] in ("validation", "all") and r.spec.get("fraction", 1.0) >= 1.0
    ]
    best: Result | None = None
    if cfg.selection == "reference":  # the base model is never the reference's choice
        decided = [r for r in decided if r.spec["edits"]]
    if decided:
        hib = bool(decided[0].summary.get("higher_is_better", True))
        best = pick(decided, hib)
    from .runner import decided_split, higher_is_better  # noqa: PLC0415

    plan = make_strategy(cfg, higher_is_better(done), decided_split(done))
    finished = store.result() is not None or plan.next_specs(done) is None
    return {
        "run": store.run,
        "strategy": cfg.strategy,
        "model": cfg.model,
        "task": cfg.objective.task or cfg.objective.type,
        **counts,
        "total": plan.total(),
        "finished": finished,
        "best": None
        if best is None
        else {
            "label": ", ".join(_describe(e) for e in best.spec["edits"]) or "base",
            "split": best.spec["split"],
            "accuracy": best.summary.get("accuracy"),
            "score": best.summary.get("score"),
            "log_loss": best.summary.get("log_loss"),
        },
    }


def _describe(e: dict) -> str:
    from .trial import describe_edit  # noqa: PLC0415

    return describe_edit(e)


def paired_records(store: TrialStore, split: str | None = None) -> tuple[list[dict], list[dict]]:
    """The per-example records of base and best on one split (default: test, or "all" where
    the run decided on all examples), in example order: what a paired comparison (bootstrap
    CI, McNemar) of the two needs."""
    from .significance import base_and_best  # noqa: PLC0415

    base, best = base_and_best(store.results(), result_of(store), split)
    return store.records(base), store.records(best)
