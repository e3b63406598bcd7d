"""Worker processes on one trial store: a worker killed with SIGKILL and a resumed run give the
same final table with no trial duplicated or missing; two workers finish one grid together."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest
from conftest import make_tiny
from optuna.trial import TrialState
from test_search import grid_cfg, run_grid, store_at

from laserkit.search import TrialStore
from laserkit.search.runner import spawn
from laserkit.search.store import default_url

LAYERS = tuple(range(6, 12))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny llama saved to disk (workers load it themselves) and its in-memory twin."""
    path = tmp_path_factory.mktemp("model")
    model = make_tiny("llama")
    model.save_pretrained(path)
    cfg = grid_cfg(model, layers=LAYERS, rhos=(0.5, 0.05), heartbeat_s=1, grace_s=3)
    cfg.model = str(path)
    return model, cfg


def start_workers(path, n: int):
    return spawn(default_url(path), "run", n, ["cpu"], threads=1)


def completed_per_key(store: TrialStore) -> Counter:
    return Counter(
        t.user_attrs["spec"]["key"] for t in store.study.get_trials(states=(TrialState.COMPLETE,))
    )


def test_sigkilled_worker_then_resume_loses_and_repeats_nothing(tmp_path, tiny):
    model, cfg = tiny
    reference = run_grid(tmp_path / "ref", cfg, model)

    run = tmp_path / "run"
    store = store_at(run, cfg)
    (proc,) = start_workers(run, 1)
    deadline = time.monotonic() + 120
    while len(store.results()) < 6 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    partial = len(store.results())
    assert 6 <= partial < len(reference["trials"])  # killed mid-way

    resumed = run_grid(run, cfg, model, resume=True)
    assert resumed["chosen"] == reference["chosen"]
    assert [(r["lname"], r["layer"], r["rho"]) for r in resumed["trials"]] == [
        (r["lname"], r["layer"], r["rho"]) for r in reference["trials"]
    ]
    for a, b in zip(resumed["trials"], reference["trials"], strict=True):
        assert a["accuracy"] == b["accuracy"]
        assert a["log_loss"] == pytest.approx(b["log_loss"], abs=1e-6)
    counts = completed_per_key(store)
    assert set(counts.values()) == {1}  # no trial stored twice
    assert len(counts) == len(reference["trials"]) + 3  # grid + base val + base/best test
    for r in store.results().values():
        assert len(store.records(r)) == r.summary["n"]  # every record file is whole


def test_two_workers_finish_one_grid_together(tmp_path, tiny):
    model, cfg = tiny
    store_at(tmp_path, cfg)
    procs = start_workers(tmp_path, 2)
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    store = store_at(tmp_path)
    counts = completed_per_key(store)
    assert set(counts.values()) == {1}
    assert len(counts) == 2 * len(LAYERS) * 2 + 3
    complete = store.study.get_trials(states=(TrialState.COMPLETE,))
    workers = {t.user_attrs["worker"] for t in complete}
    assert len(workers) == 2  # both took part
    result = run_grid(tmp_path, cfg, model, resume=True)  # nothing left to run
    assert len(result["trials"]) == 2 * len(LAYERS) * 2
