"""The runs a database holds, read without writing anything to it, and the one-line check that
a database can be reached at all (before a run directory or a scan is made)."""

from __future__ import annotations

from ..core.errors import LaserkitError, first_line
from .store import LEGACY_STUDY


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
