"""The durable trial store: one Optuna study per run, named by the run, in an RDB (SQLite by
default, PostgreSQL for several machines: any SQLAlchemy URL).

Everything a run needs is in the database, so a worker anywhere needs only the URL and the run's
name: the run's configuration and, once finished, its result (study user attributes), every
trial (its spec and summary as trial user attributes) and every trial's per-example records
(zlib-compressed JSON in a table of our own, ``laserkit_records``, so that listing trials never
loads them).

Trials are enqueued as WAITING and popped by a compare-and-set on the trial's state
(Optuna locks the row with SELECT ... FOR UPDATE, which PostgreSQL honours across machines;
SQLite ignores it, so on SQLite the processes of one machine also take a file lock next to the
database). A running trial sends heartbeats; when a worker dies its trial goes stale, is marked
FAIL and re-enqueued by RetryHeartbeatStaleTrialCallback. Records are written before the trial is
told COMPLETE, so a completed trial always has its records. Enqueueing is deduplicated by key,
and results are deduplicated by key, so a trial is never lost nor counted twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ..core.errors import LaserkitError, first_line
from .config import RunConfig
from .identity import Fingerprints, RunIdentity, check_same
from .objective import LEGACY_SEMANTIC_TOKENS, Scored
from .trial import Result

WORKER = f"{socket.gethostname()}:{os.getpid()}"
MAX_FAILURES = 3  # a trial that failed this often stops the run with its error
LEGACY_STUDY = "laserkit"  # the one study name of run directories made before runs had names

_META = sa.MetaData()
RECORDS = sa.Table(
    "laserkit_records",
    _META,
    sa.Column("study", sa.String(512), primary_key=True),
    sa.Column("trial", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

__all__ = ["Popped", "Result", "TrialStore", "default_url", "normalize_url", "WORKER"]


@dataclass
class Popped:
    """A trial this worker now owns."""

    number: int
    trial_id: int
    spec: dict


def default_url(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / 'trials.db').resolve()}"


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg2 to SQLAlchemy; laserkit[postgres] installs psycopg 3,
    so a plain URL is pointed at whichever of the two is installed, and a URL whose driver is
    missing fails in one line that says what to install."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise LaserkitError(
            f"{url!r} is not a database URL: use sqlite:///PATH or "
            "postgresql://USER:PASSWORD@HOST/DB"
        )
    if scheme in ("postgresql", "postgres"):
        if _has("psycopg"):
            return f"postgresql+psycopg://{rest}"
        if _has("psycopg2"):
            return f"postgresql+psycopg2://{rest}"
        raise LaserkitError(
            "no PostgreSQL driver: pip install 'laserkit[postgres]' "
            "(psycopg 3), then use postgresql://USER:PASSWORD@HOST/DB"
        )
    driver = {
        "postgresql+psycopg": "psycopg",
        "postgresql+psycopg2": "psycopg2",
        "mysql+pymysql": "pymysql",
        "mysql": "MySQLdb",
    }.get(scheme)
    if driver and not _has(driver):
        hint = (
            "pip install 'laserkit[postgres]'"
            if driver == "psycopg"
            else f"install the {driver} module"
        )
        raise LaserkitError(f"{scheme}:// needs the {driver} driver: {hint}")
    return url


def _has(module: str) -> bool:
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec(module) is not None


def public_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


SECRET_ENV = "LASERKIT_STORAGE"  # the full URL, password included, for a stored URL without one
PASSWORD_HELP = (
    f"the password is never stored: give it in PGPASSWORD, in ~/.pgpass, or as the "
    f"whole URL in {SECRET_ENV}"
)


def without_password(url: str) -> str:
    """The URL with its password removed, for anything written to disk (store.json) or put on
    a command line (worker processes): the password comes from the environment instead."""
    try:
        u = sa.engine.make_url(url)
    except Exception:
        return url
    return url if u.password is None else _no_password(u).render_as_string(hide_password=False)


def _no_password(u: sa.engine.URL) -> sa.engine.URL:
    """The URL without a password (``URL.set(password=None)`` leaves it as it was)."""
    return u._replace(password=None)


def with_secret(url: str) -> str:
    """The URL to connect with: LASERKIT_STORAGE when it names the same database (scheme, user,
    host, port, database) and this URL carries no password; else the URL as given, whose
    driver (libpq) then reads PGPASSWORD or ~/.pgpass itself."""
    secret = os.environ.get(SECRET_ENV)
    if not secret or "://" not in url:
        return url
    try:
        mine, env = (
            sa.engine.make_url(normalize_url(url)),
            sa.engine.make_url(normalize_url(secret)),
        )
    except Exception:
        return url
    if mine.password is None and mine == _no_password(env):
        return normalize_url(secret)
    return url


class TrialStore:
    """One run's trials in the study ``run`` at ``url``.

    ``create``: the config of a new run (refused if the run exists, unless ``resume``, which
    checks that it computes the same thing). Without it the run must exist and its stored
    config is used (a worker, ``status``, ``report``)."""

    def __init__(
        self,
        url: str,
        run: str,
        create: RunConfig | None = None,
        resume: bool = False,
        heartbeat_s: int | None = None,
        grace_s: int | None = None,
        readonly: bool = False,
    ) -> None:
        optuna.logging.set_verbosity(logging.WARNING)
        self.url = normalize_url(url)
        self.run = run
        self.readonly = readonly and create is None
        self._lock_path = None if self.readonly else _lock_path(self.url)
        with self._lock():  # workers starting together would race to create the tables
            self._open()
            self._attach(create, resume)
        hb = heartbeat_s or self.config.heartbeat_s
        self.storage.heartbeat_interval = hb
        self.storage.grace_period = grace_s or self.config.grace_s

    def _open(self) -> None:
        kwargs = (
            {"connect_args": {"timeout": 120}}
            if self.url.startswith("sqlite")
            else {"pool_pre_ping": True}
        )
        url = self.url
        if self.readonly and url.startswith("sqlite"):
            url, kwargs = readonly_sqlite(url), {"connect_args": {"timeout": 120, "uri": True}}
        for attempt in range(3):  # workers of several machines may create the tables at once
            try:
                with _quiet():
                    self.storage = RDBStorage(
                        with_secret(url),
                        engine_kwargs=kwargs,
                        heartbeat_interval=5,
                        grace_period=20,
                        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                            max_retry=MAX_FAILURES
                        ),
                        skip_table_creation=self.readonly,
                    )
                if not self.readonly:
                    _META.create_all(self.storage.engine)
                return
            except Exception as e:  # bad URL, server unreachable, a creation race
                msg = first_line(_root(e))  # Optuna wraps the driver's error in its own
                if attempt == 2 or "connection" in msg.lower() or "password" in msg.lower():
                    hint = f" ({PASSWORD_HELP})" if "password" in msg.lower() else ""
                    raise LaserkitError(
                        f"cannot open trial store {public_url(self.url)}: {msg}{hint}"
                    ) from None
                time.sleep(1.0 + attempt)

    def _attach(self, create: RunConfig | None, resume: bool) -> None:
        names = {s.study_name for s in self.storage.get_all_studies()}
        if self.run not in names and create is None:
            have = ", ".join(sorted(names - {LEGACY_STUDY})) or "none"
            raise LaserkitError(
                f"no run named {self.run!r} in {public_url(self.url)} (runs there: {have})"
            )
        if create is None:  # an existing run: loading it writes nothing (read-only storage)
            self.study = optuna.load_study(study_name=self.run, storage=self.storage)
        else:
            self.study = optuna.create_study(
                study_name=self.run, storage=self.storage, load_if_exists=True, direction="maximize"
            )
        stored = self.study.user_attrs.get("config")
        if stored is None:
            if create is None:
                raise LaserkitError(f"run {self.run!r} has no configuration")
            self.study.set_user_attr("config", create.to_json())
            self.config = create
            return
        self.config = RunConfig.from_json(stored)
        if create is not None:
            if not resume:
                raise LaserkitError(
                    f"a run named {self.run!r} exists in "
                    f"{public_url(self.url)}; add --resume to continue it, or "
                    "choose another --run / --run-dir"
                )
            self._check_definitions(create)
            diff = RunIdentity.of(self.config).differences(RunIdentity.of(create))
            if (
                diff == ["objective.max_new_tokens"]
                and self.config.objective.max_new_tokens is None
            ):
                self._adopt_generation_length(create)
                return
            check_same(RunIdentity.of(self.config), RunIdentity.of(create), self.run, "--resume")
            self.config = create  # same computation; engine settings may change

    def _check_definitions(self, create: RunConfig) -> None:
        """A run stored under older definitions (search/config.py DEFINITIONS) is continued only
        where none of its numbers depends on what changed, and is then stamped current; where
        one does, it is refused rather than mixed (its stored results stay readable)."""
        if self.config.definitions >= create.definitions:
            return
        why = self.config.legacy_conflicts()
        mine, given = (sorted(c.params.to_stored()["rhos"]) for c in (self.config, create))
        if (
            mine != given
            and len(mine) == len(given)
            and all(abs(a - b) < 1e-12 for a, b in zip(mine, given, strict=True))
        ):
            why.insert(
                0,
                "its ρ came from --rate as 1 − 0.1·rate, which differs in the last bits "
                "from the reference's (10 − rate)·0.1 used now, and so can the kept rank",
            )
        if why:
            raise LaserkitError(
                f"--resume: run {self.run!r} was made under laserkit's older definitions and "
                f"{why[0]}; continuing it would mix two definitions in one run. Its results stay "
                "readable (status, report); start a new run to use the current definitions"
            )
        self.config.definitions = create.definitions
        self.study.set_user_attr("config", self.config.to_json())

    def identity(self) -> RunIdentity:
        """The run's stored identity: its configuration and the fingerprints recorded with it."""
        return RunIdentity.of(
            self.config, Fingerprints.from_json(self.study.user_attrs.get("fingerprints"))
        )

    def check_fingerprints(self, given: Fingerprints, who: str) -> None:
        """Refuse a session (resume, worker) whose model weights or examples differ from the
        run's; record those the run lacks (a run made before fingerprints, or a new one)."""
        stored = self.identity()
        check_same(
            stored,
            RunIdentity.of(self.config, given),
            self.run,
            who,
            fix="give the run's model and data, or start a new run",
        )
        have = stored.fingerprints
        merged = Fingerprints(have.weights or given.weights, have.data or given.data)
        if merged != have and not self.readonly:
            self.study.set_user_attr("fingerprints", merged.to_json())

    def _adopt_generation_length(self, create: RunConfig) -> None:
        """Resume a run made before runs stored their generation length (semantic tasks then
        generated 128 tokens): only the same length continues it, and it is then stored."""
        from ..tasks import get_task  # noqa: PLC0415 - definitions only, no data read
        from ..tasks.kinds import kind_of  # noqa: PLC0415

        obj = create.objective
        semantic = (
            obj.type == "task"
            and obj.task is not None
            and kind_of(get_task(obj.task, obj.data).kind).legacy_max_new_tokens is not None
        )
        if not semantic or RunIdentity.of(self.config).differences(
            RunIdentity.of(replace(create, objective=replace(obj, max_new_tokens=None)))
        ):
            raise LaserkitError(
                f"--resume: this command differs from run {self.run!r} in "
                "objective; repeat the original options"
            )
        if obj.max_new_tokens not in (None, LEGACY_SEMANTIC_TOKENS):
            raise LaserkitError(
                f"--resume: run {self.run!r} was made before a run stored its generation length "
                f"(semantic tasks then generated {LEGACY_SEMANTIC_TOKENS} tokens; laserRMT's "
                f"512 is the default now); add --max-new-tokens {LEGACY_SEMANTIC_TOKENS} to "
                "continue it as it began"
            )
        self.config = replace(create, objective=replace(obj, max_new_tokens=LEGACY_SEMANTIC_TOKENS))
        self.study.set_user_attr("config", self.config.to_json())

    # -- the queue -----------------------------------------------------------------------------

    def _trials(self, states: tuple[TrialState, ...] | None = None) -> list:
        return self.study.get_trials(deepcopy=False, states=states)

    @staticmethod
    def _spec(trial) -> dict | None:
        return trial.user_attrs.get("spec")

    def keys(self, states: tuple[TrialState, ...]) -> set[str]:
        return {s["key"] for t in self._trials(states) if (s := self._spec(t))}

    def _lock(self):
        """Serialises enqueue and pop between workers: a file lock next to a SQLite database
        (the processes of one machine), a PostgreSQL advisory lock on the run (every machine);
        other servers rely on the row lock of the state change alone (a trial enqueued twice
        is then run twice and counted once)."""
        if self._lock_path:
            return _file_lock(self._lock_path)
        if self.url.startswith("postgresql") and hasattr(self, "storage"):
            return _pg_lock(self.storage.engine, self.run, float(self.storage.grace_period))
        return nullcontext()

    def enqueue(self, specs: list[dict]) -> int:
        """Add the specs not already waiting, running or complete, in order; returns how many."""
        self.check_failures()
        with self._lock():
            have = self.keys((TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE))
            added = 0
            for spec in specs:
                if spec["key"] not in have:
                    self.study.enqueue_trial({"key": spec["key"]}, user_attrs={"spec": spec})
                    have.add(spec["key"])
                    added += 1
        return added

    def check_failures(self) -> None:
        """Stop with the error of a trial that keeps failing, rather than retry it forever."""
        fails: dict[str, list] = {}
        for t in self._trials((TrialState.FAIL,)):
            if (s := self._spec(t)) is not None and t.user_attrs.get("error") != "interrupted":
                fails.setdefault(s["key"], []).append(t)
        done = self.keys((TrialState.COMPLETE,))
        for key, ts in fails.items():
            if key not in done and len(ts) >= MAX_FAILURES:
                err = next((t.user_attrs["error"] for t in ts if "error" in t.user_attrs), "")
                raise LaserkitError(f"trial {key} failed {len(ts)} times: {err or 'worker died'}")

    def fail_stale(self) -> None:
        """Mark trials of dead workers FAIL; the retry callback re-enqueues them."""
        with _quiet():
            optuna.storages.fail_stale_trials(self.study)

    def pop(self) -> Popped | None:
        """Take the next waiting trial (atomic across processes), or None when none is waiting."""
        with self._lock():
            return self._pop()

    def _pop(self) -> Popped | None:
        done = self.keys((TrialState.COMPLETE,))
        for t in self._trials((TrialState.WAITING,)):
            # heartbeat first: a worker killed between these two writes leaves either a waiting
            # trial (taken again) or a running one with a heartbeat (retried once stale), never a
            # running trial without heartbeat, which Optuna would never retry
            self.storage.record_heartbeat(t._trial_id)
            try:
                if not self.storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            self.storage.set_trial_user_attr(t._trial_id, "worker", WORKER)
            spec = self._spec(t)
            if spec is None or spec["key"] in done:  # a duplicate enqueued by a racing worker
                self.storage.set_trial_state_values(t._trial_id, state=TrialState.PRUNED)
                continue
            return Popped(t.number, t._trial_id, spec)
        return None

    def running(self) -> int:
        return len(self._trials((TrialState.RUNNING,)))

    def waiting(self) -> int:
        return len(self._trials((TrialState.WAITING,)))

    @contextmanager
    def heartbeat(self, popped: Popped) -> Iterator[None]:
        """Keep the trial alive while it runs."""
        stop = threading.Event()
        interval = self.storage.get_heartbeat_interval() or 5

        def beat() -> None:
            while not stop.wait(interval):
                self.storage.record_heartbeat(popped.trial_id)

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def complete(self, popped: Popped, scored: Scored, value: float) -> None:
        """Records first, then the summary, then COMPLETE: nothing half-stored.

        If another worker took this trial for dead meanwhile (a heartbeat late on a loaded
        machine) it is FAIL already and a retry waits; the result is then stored as a new
        completed trial and the retry is dropped as a duplicate when popped."""
        self._write_records(popped.number, scored.records)
        try:
            self.storage.set_trial_user_attr(popped.trial_id, "summary", _jsonable(scored.summary))
            self.study.tell(popped.number, _finite(value))
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
            if self.study.get_trials(deepcopy=False)[popped.number].state == TrialState.COMPLETE:
                return  # run twice through a race: the first result stands, same records
            self.add_complete(popped.spec, scored, value)

    def fail(self, popped: Popped, error: str) -> None:
        self.storage.set_trial_user_attr(popped.trial_id, "error", error[:2000])
        self.study.tell(popped.number, state=TrialState.FAIL)

    def release(self, popped: Popped) -> None:
        """Give a trial back (Ctrl-C): it is marked failed and queued again at once."""
        self.storage.set_trial_user_attr(popped.trial_id, "error", "interrupted")
        self.study.tell(popped.number, state=TrialState.FAIL)
        self.study.enqueue_trial({"key": popped.spec["key"]}, user_attrs={"spec": popped.spec})

    def add_complete(
        self, spec: dict, scored: Scored, value: float, attrs: dict | None = None
    ) -> Result:
        """Store a trial computed outside the queue (a race's result, or a trial copied from
        another run): a RUNNING row first (no heartbeat, so no worker takes it for dead, and
        ``results`` skips it until it has a summary), then the records, the summary and
        COMPLETE, as for a trial of the queue. ``attrs``: more user attributes for the row."""
        frozen = optuna.trial.create_trial(
            state=TrialState.RUNNING, user_attrs={"spec": spec, **(attrs or {})}
        )
        trial_id = self.storage.create_new_trial(self.study._study_id, template_trial=frozen)
        number = self.storage.get_trial_number_from_id(trial_id)
        self._write_records(number, scored.records)
        summary = _jsonable(scored.summary)
        self.storage.set_trial_user_attr(trial_id, "summary", summary)
        self.study.tell(number, _finite(value))
        return Result(number, spec, summary)

    def _write_records(self, number: int, records: list[dict]) -> None:
        blob = zlib.compress(json.dumps(_jsonable(records)).encode(), 6)
        with self.storage.engine.begin() as conn:
            conn.execute(
                sa.delete(RECORDS).where(RECORDS.c.study == self.run, RECORDS.c.trial == number)
            )
            conn.execute(sa.insert(RECORDS).values(study=self.run, trial=number, data=blob))

    # -- results -------------------------------------------------------------------------------

    def results(self) -> dict[str, Result]:
        """Completed trials by key; a key completed twice (a race) keeps the first."""
        out: dict[str, Result] = {}
        for t in sorted(self._trials((TrialState.COMPLETE,)), key=lambda t: t.number):
            spec = self._spec(t)
            if spec is not None and "summary" in t.user_attrs and spec["key"] not in out:
                out[spec["key"]] = Result(t.number, spec, t.user_attrs["summary"])
        return out

    def records(self, result: Result) -> list[dict]:
        """A trial's per-example records (base and best are what paired tests compare)."""
        with self.storage.engine.connect() as conn:
            blob = conn.execute(
                sa.select(RECORDS.c.data).where(
                    RECORDS.c.study == self.run, RECORDS.c.trial == result.number
                )
            ).scalar()
        if blob is None:
            return _legacy_records(self.study, result)
        return json.loads(zlib.decompress(blob))

    def counts(self) -> dict[str, int]:
        """Trials by state (done, running, waiting, failed) for ``laserkit status``."""
        n = {"done": 0, "running": 0, "waiting": 0, "failed": 0}
        names = {
            TrialState.COMPLETE: "done",
            TrialState.RUNNING: "running",
            TrialState.WAITING: "waiting",
            TrialState.FAIL: "failed",
        }
        for t in self._trials():
            if t.state in names:
                n[names[t.state]] += 1
        n["done"] = len(self.results())  # duplicates of a race count once
        return n

    # -- the run's result ----------------------------------------------------------------------

    def set_result(self, result: dict[str, Any]) -> None:
        if not self.readonly:  # a run read from read-only storage computes it, keeps nothing
            self.study.set_user_attr("result", _jsonable(result))

    def result(self) -> dict[str, Any] | None:
        return self.study.user_attrs.get("result")


def _legacy_records(study, result: Result) -> list[dict]:
    """Records of a run made before they moved into the database: RUN_DIR/trials/<name>."""
    t = study.get_trials(deepcopy=False)[result.number]
    name = t.user_attrs.get("records")
    run_dir = study.user_attrs.get("run_dir")
    if not name or not run_dir or not (Path(run_dir) / "trials" / name).exists():
        return []
    text = (Path(run_dir) / "trials" / name).read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def readonly_sqlite(url: str) -> str:
    """A SQLite URL opened read-only (``mode=ro``): reading a run on read-only storage (an
    archive, a colleague's mount) must not need to create a journal, a lock or a table."""
    from urllib.parse import quote  # noqa: PLC0415

    db = sa.engine.make_url(url).database
    if not db or db == ":memory:":
        return url
    return f"sqlite:///file:{quote(str(Path(db).resolve()))}?mode=ro&uri=true"


def _root(e: BaseException) -> BaseException:
    """The innermost cause of an exception (the driver's "password authentication failed"
    under Optuna's "an exception is raised during the commit")."""
    seen = set()
    while (nxt := e.__cause__ or e.__context__) is not None and id(nxt) not in seen:
        seen.add(id(e))
        e = nxt
    return e


def _lock_path(url: str) -> Path | None:
    """A file lock for SQLite: next to the database file (one machine shares it)."""
    if not url.startswith("sqlite"):
        return None
    db = sa.engine.make_url(url).database
    if not db or db == ":memory:":
        return Path(tempfile.gettempdir()) / "laserkit-memory.lock"
    return Path(db).with_name(Path(db).name + ".lock")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def _pg_lock(engine: sa.Engine, run: str, wait_s: float) -> Iterator[None]:
    """A session-level advisory lock keyed by the run (released by the server if the worker
    dies holding it). A worker that holds it and stalls (paused, cut off) must not stall the
    others: after ``wait_s`` they go on without it, which costs at most a trial run twice
    (the result is counted once)."""
    key = int.from_bytes(hashlib.sha1(f"laserkit:{run}".encode()).digest()[:8], "big", signed=True)
    with engine.connect() as conn:
        deadline = time.monotonic() + wait_s
        while not (
            got := conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        ):
            conn.commit()
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        conn.commit()
        try:
            yield
        finally:
            if got:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


@contextmanager
def _quiet() -> Iterator[None]:
    """Optuna marks heartbeats and stale-trial retries experimental; they are what we rely on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _finite(value: float) -> float:
    """Optuna rejects NaN; a trial that produced no number is stored as −inf."""
    return value if value == value else float("-inf")


def _jsonable(obj: object) -> Any:
    return json.loads(json.dumps(obj, default=str))
