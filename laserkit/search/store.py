"""The durable trial store: an Optuna RDB study per run (SQLite by default, any SQLAlchemy URL).

Each trial is identified by a key (its parameters as a string). Trials are enqueued as WAITING
and popped atomically by workers (a compare-and-set on the trial state in the database), so
several processes or machines share one queue. A running trial sends heartbeats; when a worker
dies its trial goes stale, is marked FAIL and re-enqueued by RetryHeartbeatStaleTrialCallback.
Per-example records are written to ``RUN_DIR/trials/<number>.jsonl`` before the trial is told
COMPLETE, so a completed trial always has its records. Enqueueing is idempotent (dedupe by key),
and results are deduplicated by key, so a trial is never lost nor counted twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ..errors import LaserkitError
from ..saving import atomic_write_text
from .objective import Scored

STUDY = "laserkit"
WORKER = f"{socket.gethostname()}:{os.getpid()}"
MAX_FAILURES = 3  # a trial that failed this often stops the run with its error


@dataclass
class Popped:
    """A trial this worker now owns."""

    number: int
    trial_id: int
    spec: dict


@dataclass
class Result:
    """A completed trial."""

    number: int
    spec: dict
    summary: dict
    records: str | None = None  # file name under RUN_DIR/trials

    @property
    def key(self) -> str:
        return self.spec["key"]


def default_url(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / 'trials.db').resolve()}"


class TrialStore:
    """One run's trials. ``url`` defaults to ``sqlite:///RUN_DIR/trials.db``."""

    def __init__(self, run_dir: str | Path, url: str | None = None, heartbeat_s: int = 5,
                 grace_s: int = 20) -> None:
        optuna.logging.set_verbosity(logging.WARNING)
        self.run_dir = Path(run_dir)
        (self.run_dir / "trials").mkdir(parents=True, exist_ok=True)
        self.url = url or default_url(self.run_dir)
        engine_kwargs = {"connect_args": {"timeout": 120}} if self.url.startswith("sqlite") else {}
        self._lock_path = self.run_dir / ".store.lock"
        with self._lock():  # workers starting together would race to create the tables
            self._open(engine_kwargs, heartbeat_s, grace_s)

    def _open(self, engine_kwargs: dict, heartbeat_s: int, grace_s: int) -> None:
        try:
            with _quiet():
                self.storage = RDBStorage(
                    self.url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                    grace_period=grace_s,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                        max_retry=MAX_FAILURES),
                )
        except Exception as e:  # bad URL, server unreachable, missing driver
            raise LaserkitError(f"cannot open trial store {self.url}: {e}") from None
        self.study = optuna.create_study(study_name=STUDY, storage=self.storage,
                                         load_if_exists=True, direction="maximize")

    # -- the queue -----------------------------------------------------------------------------

    def _trials(self, states: tuple[TrialState, ...] | None = None) -> list:
        return self.study.get_trials(deepcopy=False, states=states)

    @staticmethod
    def _spec(trial) -> dict | None:
        return trial.user_attrs.get("spec")

    def keys(self, states: tuple[TrialState, ...]) -> set[str]:
        return {s["key"] for t in self._trials(states) if (s := self._spec(t))}

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialises enqueue and pop between workers on this machine. SQLite ignores SELECT ...
        FOR UPDATE, so two processes could otherwise pop the same trial; server databases
        (PostgreSQL, MySQL) lock the row themselves for workers on other machines."""
        with open(self._lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

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
        """Records first (atomically), then the summary, then COMPLETE: nothing half-stored.

        If another worker took this trial for dead meanwhile (a heartbeat late on a loaded
        machine) it is FAIL already and a retry waits; the result is then stored as a new
        completed trial and the retry is dropped as a duplicate when popped."""
        name = self._write_records(f"{popped.number}", scored.records)
        try:
            self.storage.set_trial_user_attr(popped.trial_id, "records", name)
            self.storage.set_trial_user_attr(popped.trial_id, "summary",
                                             _jsonable(scored.summary))
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

    def add_complete(self, spec: dict, scored: Scored, value: float) -> Result:
        """Store a trial computed outside the queue (greedy and compose steps run in order).

        The records file is named by the key and written first; the trial row is one insert."""
        name = self._write_records(hashlib.sha1(spec["key"].encode()).hexdigest()[:16],
                                   scored.records)
        summary = _jsonable(scored.summary)
        self.study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=_finite(value),
            user_attrs={"spec": spec, "summary": summary, "records": name},
        ))
        return Result(self.study.get_trials(deepcopy=False)[-1].number, spec, summary, name)

    def _write_records(self, stem: str, records: list[dict]) -> str:
        text = "".join(json.dumps(_jsonable(r)) + "\n" for r in records)
        atomic_write_text(self.run_dir / "trials" / f"{stem}.jsonl", text)
        return f"{stem}.jsonl"

    # -- results -------------------------------------------------------------------------------

    def results(self) -> dict[str, Result]:
        """Completed trials by key; a key completed twice (a race) keeps the first."""
        out: dict[str, Result] = {}
        for t in sorted(self._trials((TrialState.COMPLETE,)), key=lambda t: t.number):
            spec = self._spec(t)
            if spec is not None and "summary" in t.user_attrs and spec["key"] not in out:
                out[spec["key"]] = Result(t.number, spec, t.user_attrs["summary"],
                                          t.user_attrs.get("records"))
        return out

    def records(self, result: Result) -> list[dict]:
        if result.records is None:
            return []
        path = self.run_dir / "trials" / result.records
        return [json.loads(line) for line in path.read_text().splitlines() if line]


@contextmanager
def _quiet() -> Iterator[None]:
    """Optuna marks heartbeats and stale-trial retries experimental; they are what we rely on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _finite(value: float) -> float:
    """Optuna rejects NaN; a trial that produced no number is stored as −inf."""
    return value if value == value else float("-inf")


def _jsonable(obj: object) -> object:
    return json.loads(json.dumps(obj, default=str))
