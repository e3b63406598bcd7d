"""What a run directory may hold, checked before any work: a --run-dir that is a file, holds
someone else's files or a run not asked to be resumed is refused in one line; a directory made
for a run that then fails to start is removed again."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import LaserkitError
from .migrate import LEGACY_CONFIG
from .where import POINTER

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
