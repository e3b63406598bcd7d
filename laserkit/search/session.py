"""What the search commands do, as library calls (the CLI only parses and prints): start or
resume a run, find a run from a directory or a database URL, its status, its report, and the
chosen model rebuilt and saved.

A run is named (``run``) and lives in a database (``storage``): by default SQLite in the run
directory (``RUN_DIR/trials.db``, the run named after the directory), or any SQLAlchemy URL
shared by several machines. The run directory then only receives what this machine writes for
the user: ``result.json``, ``report/``, ``best-model/`` and ``store.json`` (where the run is).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import LaserkitError, first_line
from ..core.fileio import atomic_write_text
from .config import RunConfig
from .store import LEGACY_STUDY, TrialStore, default_url
from .trial import Result

POINTER = "store.json"  # in a run directory whose trials live elsewhere
LEGACY_CONFIG = "run.json"  # the configuration of a run directory made before runs had names


@dataclass
class Where:
    """Where a run lives: its database URL, its name, and a local run directory if any."""

    url: str
    run: str
    run_dir: Path | None = None


def is_url(source: str | Path) -> bool:
    return "://" in str(source)


def locate(source: str | Path, run: str | None = None, storage: str | None = None) -> Where:
    """A run from a run directory (its SQLite database or its store.json) or a database URL
    (then ``run`` names it)."""
    if is_url(source):
        if not run:
            raise LaserkitError(
                f"say which run in {source.split('://')[0]}://... with --run "
                "NAME (laserkit status URL lists them)"
            )
        return Where(str(source), run)
    run_dir = Path(source)
    pointer = run_dir / POINTER
    if storage is None and pointer.exists():
        p = json.loads(pointer.read_text())
        return Where(p["storage"], run or p["run"], run_dir)
    if storage is None and not (run_dir / "trials.db").exists():
        raise LaserkitError(
            f"{run_dir} is not a laserkit run directory (no trials.db or "
            f"{POINTER}); give a run directory or a database URL with --run"
        )
    if storage is None and run is None and adopt_legacy(run_dir):
        return Where(default_url(run_dir), LEGACY_STUDY, run_dir)
    url = storage or default_url(run_dir)
    return Where(url, run or _dir_run(url, run_dir), run_dir)


def _dir_run(url: str, run_dir: Path) -> str:
    """The run of a run directory: named after the directory, or the database's only run when
    the directory was renamed or is mounted elsewhere (an archive, a colleague's mount)."""
    name = Path(run_dir).resolve().name
    names = run_names(url)
    return names[0] if name not in names and len(names) == 1 else name


def legacy_config(run_dir: Path) -> RunConfig | None:
    """The RunConfig of an old run directory's run.json (one study named "laserkit", records
    in RUN_DIR/trials/), or None if this is not one."""
    from .config import ObjectiveConfig  # noqa: PLC0415

    path = Path(run_dir) / LEGACY_CONFIG
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    grid = old.get("grid") or {}
    comp = old.get("compose") or {}
    edits = [e for es in grid.get("edits", []) for e in es]
    rhos = comp.get("rhos") or sorted({e["intervention"]["rho"] for e in edits}, reverse=True)
    lnames = (
        comp.get("lnames") or grid.get("lnames") or list(dict.fromkeys(e["lname"] for e in edits))
    )
    layers = comp.get("layers") or grid.get("layers") or sorted({e["layer"] for e in edits})
    return RunConfig(
        strategy={"search": "grid"}.get(old["command"], old["command"]),
        model=old["model"],
        objective=ObjectiveConfig.from_json(old["objective"]),
        intervention=old.get("intervention") or {"kind": "rank-reduction"},
        lnames=lnames,
        layers=layers,
        rhos=rhos,
        candidates=old.get("candidates") or [],
        halving=old.get("halving"),
        seed=old.get("seed", 0),
        dtype=old.get("dtype", "auto"),
        prefix_cache=old.get("prefix_cache", True),
        cache_bytes=old.get("cache_bytes", 1 << 30),
        heartbeat_s=old.get("heartbeat_s", 5),
        grace_s=old.get("grace_s", 20),
    )


def adopt_legacy(run_dir: Path) -> bool:
    """Give an old run directory's study its configuration (from run.json) and its directory
    (for the records files), so that it resumes and reports like a new run. True if it is one."""
    cfg = legacy_config(run_dir)
    if cfg is None or LEGACY_STUDY not in run_names(default_url(run_dir), legacy=True):
        return False
    store = TrialStore(default_url(run_dir), LEGACY_STUDY, create=cfg, resume=True)
    store.study.set_user_attr("run_dir", str(Path(run_dir).resolve()))
    return True


# What a run directory may hold: the SQLite store (and its lock and journals), a pointer to a
# database elsewhere, a legacy run.json with its records, the greedy's scan, the outputs. A run
# interrupted before its store was written (greedy scans first) is continued; anything else is
# someone else's directory.
RUN_MARKERS = ("trials.db", POINTER, LEGACY_CONFIG)
RUN_FILES = {
    *RUN_MARKERS,
    "trials.db-journal",
    "trials.db-wal",
    "trials.db-shm",
    "trials.db.lock",
    "trials",
    "scan",
    "result.json",
    "report",
    "best-model",
}


def check_run_dir(
    run_dir: Path,
    resume: bool,
    markers: tuple[str, ...] = RUN_MARKERS,
    allowed: set[str] = RUN_FILES,
    what: str = "run",
) -> None:
    """Refuse, before any work, a --run-dir that is a file, holds something else, or holds a
    ``what`` (one of ``markers`` is there) that --resume was not asked to continue; ``allowed``
    are the names such a directory may hold."""
    from ..core.fileio import check_writable_parent  # noqa: PLC0415

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise LaserkitError(f"--run-dir {run_dir} is an existing file, not a directory")
    check_writable_parent(run_dir, "--run-dir")
    if not run_dir.is_dir():
        return
    if any((run_dir / m).exists() for m in markers):
        if not resume:
            raise LaserkitError(
                f"{run_dir} already holds a {what}; add --resume to continue it, "
                "or choose another --run-dir"
            )
        return
    other = sorted(
        p.name for p in run_dir.iterdir() if p.name not in allowed and not p.name.startswith(".")
    )
    if other:
        raise LaserkitError(
            f"--run-dir {run_dir} holds other files ({', '.join(other[:3])}) and "
            f"no laserkit {what}; choose a new or empty directory"
        )


def open_run(source: str | Path, run: str | None = None) -> TrialStore:
    """An existing run, opened to read (status, report, apply): nothing is written to its
    database or next to it, so a run on read-only storage can be read."""
    where = locate(source, run)
    return TrialStore(where.url, where.run, readonly=True)


@contextmanager
def created_dir(path: Path) -> Iterator[None]:
    """Make ``path`` (and missing parents) for the block; if the block fails, remove what was
    made here (only that: a directory that existed before is left as it was)."""
    path = Path(path)
    top = next((p for p in (path, *path.parents) if p.parent.exists() or p.parent == p), path)
    top = path if path.exists() else top
    made = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if made:
            shutil.rmtree(top, ignore_errors=True)
        raise


def run_names(url: str, legacy: bool = False) -> list[str]:
    """The runs in a database."""
    import optuna  # noqa: PLC0415

    from .store import normalize_url  # noqa: PLC0415

    try:
        summaries = optuna.get_all_study_summaries(_reader(normalize_url(url)))
        return sorted(s.study_name for s in summaries if legacy or s.study_name != LEGACY_STUDY)
    except LaserkitError:
        raise
    except Exception as e:
        raise LaserkitError(f"cannot read {url}: {first_line(e)}") from None


def probe_storage(storage: str | None) -> None:
    """Fail now, in one line and before anything is created or scanned, on a database that
    cannot be reached (a wrong host, port or password)."""
    if storage and not storage.startswith("sqlite"):
        run_names(storage, legacy=True)


def _reader(url: str):
    """A storage that only reads (SQLite opened read-only; others as given, with the password
    from the environment): listing runs writes nothing."""
    from optuna.storages import RDBStorage  # noqa: PLC0415

    from .store import readonly_sqlite, with_secret  # noqa: PLC0415

    if url.startswith("sqlite"):
        return RDBStorage(
            readonly_sqlite(url),
            engine_kwargs={"connect_args": {"uri": True}},
            skip_table_creation=True,
        )
    return RDBStorage(with_secret(url))


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


def report(store: TrialStore, out: Path) -> Path:
    """Write OUT/report.md and its plots for a finished run."""
    from .report import write_report  # noqa: PLC0415

    return write_report(result_of(store), Path(out))


def save_chosen(
    store: TrialStore,
    out: Path,
    loaded=None,
    force: bool = False,
    dtype: str | None = None,
    device: str = "auto",
    model: str | None = None,
    console=None,
    trust_remote_code: bool = False,
) -> Path:
    """Rebuild the run's chosen model (base + chosen edits) and save it, by edit/write.py's
    rule: ``FILE.gguf`` for a GGUF base, else an HF directory, edited out of core for a local
    checkpoint (only the edited tensors are read) unless the model is ``loaded`` already; a hub
    id or a dtype other than the stored one loads the model. ``model``: where the base model
    lives on this machine if not where the run recorded it."""
    from ..edit.write import write_edited  # noqa: PLC0415
    from ..interventions import Intervention  # noqa: PLC0415

    cfg = store.config
    result = result_of(store)
    extra = {
        "search": {
            "run": store.run,
            "command": result["command"],
            "strategy": result.get("strategy", result["command"]),
            "chosen": result["chosen"]["label"],
            "base_test": result["base"]["test"],
            "best_test": result["best"]["test"],
        }
    }
    steps = [
        (e["lname"], e["layer"], Intervention.from_dict(e["intervention"]))
        for e in result["chosen"]["edits"]
    ]
    written = write_edited(
        model or cfg.model,
        steps,
        out,
        loaded=loaded,
        overwrite=force,
        device=device,
        dtype=dtype or cfg.dtype,
        trust_remote_code=trust_remote_code,
        extra_record=extra,
    )
    assert written.path is not None  # out is given
    return written.path


def paired_records(store: TrialStore, split: str | None = None) -> tuple[list[dict], list[dict]]:
    """The per-example records of base and best on one split (default: test, or "all" where
    the run decided on all examples), in example order: what a paired comparison (bootstrap
    CI, McNemar) of the two needs."""
    from .significance import base_and_best  # noqa: PLC0415

    base, best = base_and_best(store.results(), result_of(store), split)
    return store.records(base), store.records(best)


# The main job: a small LASER search on the packaged SmolLM2 and BIG-bench's FEVER claims (first
# 300: 60 validation, 240 test; fc_in/fc_out × last 6 layers × ρ 0.2, 0.1, 0.05, 0.01: 48 trials).
DEMO = {
    "task": "fever-bigbench",
    "limit": 300,
    "lname": "fc_in,fc_out",
    "lnum": "-6:",
    "rho": "0.2,0.1,0.05,0.01",
}


def demo_config(num_layers: int) -> RunConfig:
    from ..interventions import Intervention  # noqa: PLC0415
    from .config import ObjectiveConfig  # noqa: PLC0415

    return RunConfig.from_cli(
        "grid",
        "default",
        ObjectiveConfig.from_cli(DEMO["task"], limit=DEMO["limit"]),
        num_layers=num_layers,
        lname=DEMO["lname"],
        lnum=DEMO["lnum"],
        rho=DEMO["rho"],
        intervention=Intervention(kind="rank-reduction", rho=1.0).to_dict(),
    )


def finish(store: TrialStore, run_dir: Path, loaded=None, save_model: bool = True) -> dict:
    """After a run: the report in RUN_DIR/report and, unless told not to, the chosen model in
    RUN_DIR/best-model. Returns the paths written."""
    out = {"report": report(store, Path(run_dir) / "report")}
    if save_model:
        out["model"] = save_chosen(store, Path(run_dir) / "best-model", loaded=loaded, force=True)
    return out
