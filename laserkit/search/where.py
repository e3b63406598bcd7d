"""Where a run lives: from a run directory (its SQLite database, or its store.json pointing to a
database elsewhere) or from a database URL and a run name; and the run opened to read.

A run is named (``run``) and lives in a database (``storage``): by default SQLite in the run
directory (``RUN_DIR/trials.db``, the run named after the directory), or any SQLAlchemy URL
shared by several machines. The run directory then only receives what this machine writes for
the user: ``result.json``, ``report/``, ``best-model/`` and ``store.json`` (where the run is).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import LaserkitError
from .catalog import run_names
from .migrate import adopt_legacy
from .store import LEGACY_STUDY, TrialStore, default_url

POINTER = "store.json"  # in a run directory whose trials live elsewhere


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
                f"say which run in {str(source).split('://')[0]}://... with --run "
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


def open_run(source: str | Path, run: str | None = None) -> TrialStore:
    """An existing run, opened to read (status, report, apply): nothing is written to its
    database or next to it, so a run on read-only storage can be read."""
    where = locate(source, run)
    return TrialStore(where.url, where.run, readonly=True)
