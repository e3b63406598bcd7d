"""Strategies on the one engine: TPE proposes distinct trials of the grid's space, reproducibly
from its seed, and exploits what it has seen; TPE, compose and the grid give the same table
whatever the number of trials in flight and the order they finish in; the planners are pure (no
trial store needed); URLs name a driver that exists."""

from __future__ import annotations

import importlib
import random
import sys

import pytest
import torch
from conftest import make_tiny
from test_search import grid_cfg, run_grid, store_at

from laserkit import LaserkitError
from laserkit.model.targets import find_blocks
from laserkit.search import CallableObjective, Context, finalize, make_strategy, names
from laserkit.search.report import write_report
from laserkit.search.store import normalize_url

pytestmark = pytest.mark.usefixtures("one_thread")

PEAK = ("fc_in", 8, 0.1)


def peaked(model):
    """A constructed score of the one edit applied: highest at PEAK, falling off with the
    distance in layer and in ρ's rank order (found by comparing the weights with the original
    ones, independently of the engine)."""
    blocks = find_blocks(model)[1]
    mats = {
        (n, i): getattr(b.mlp, attr)
        for i, b in enumerate(blocks)
        for n, attr in (("fc_in", "gate_proj"), ("fc_out", "down_proj"))
    }
    original = {k: m.weight.detach().clone() for k, m in mats.items()}
    rhos = [0.5, 0.2, 0.1, 0.05]

    def score(m, split):
        changed = [k for k, mod in mats.items() if not torch.equal(mod.weight, original[k])]
        if not changed:
            return 0.0
        ((lname, layer),) = changed
        rank = int(torch.linalg.matrix_rank(mats[(lname, layer)].weight.double()))
        rho = min(rhos, key=lambda r: abs(r * 32 - rank))  # rank = ceil(ρ·32) of a 64×32 matrix
        far = abs(layer - PEAK[1]) + abs(rhos.index(rho) - rhos.index(PEAK[2]))
        return 10.0 - far - (3.0 if lname != PEAK[0] else 0.0)

    return score, rhos


def tpe_run(tmp_path, seed: int, trials: int = 20):
    model = make_tiny("llama")
    score, rhos = peaked(model)
    cfg = grid_cfg(
        model, layers=tuple(range(12)), rhos=rhos, strategy="tpe", trials=trials, seed=seed
    )
    return run_grid(tmp_path / f"tpe{seed}", cfg, model, CallableObjective(score))


def test_tpe_runs_its_budget_of_distinct_trials_reproducibly_and_exploits(tmp_path):
    first = tpe_run(tmp_path / "a", seed=0)
    rows = first["trials"]
    assert len(rows) == 20 and len({r["key"] for r in rows}) == 20  # distinct, as budgeted
    assert first == tpe_run(tmp_path / "b", seed=0)  # the seed fixes the whole run
    other = tpe_run(tmp_path / "c", seed=1)
    assert [r["key"] for r in other["trials"]] != [r["key"] for r in rows]

    best = max(rows, key=lambda r: r["score"])  # the paper's rule on a score: the highest
    assert first["best"]["validation"]["score"] == best["score"]
    assert first["chosen"]["key"] == best["key"]
    store = store_at(tmp_path / "a" / "tpe0")
    tests = sorted(r.spec["key"] for r in store.results().values() if r.spec["split"] == "test")
    assert tests == sorted(["test|base", "test|" + first["chosen"]["label"]])

    def distance(r):
        return abs(r["layer"] - PEAK[1]) + (r["lname"] != PEAK[0])

    report = write_report(first, tmp_path / "report")
    assert {p.name for p in report.parent.glob("*.png")} >= {"progress.png", "versus_rho.png"}

    startup = sum(map(distance, rows[:10])) / 10  # Optuna's random start-up trials
    modelled = sum(map(distance, rows[10:])) / len(rows[10:])
    assert modelled < startup  # TPE proposes closer to the optimum once it models the results


def test_planners_are_pure_functions_of_the_results():
    model = make_tiny("llama")
    for name in names():
        cfg = grid_cfg(model, strategy=name, trials=4)
        plan = make_strategy(cfg)
        first = plan.next_specs({})
        assert first and first == make_strategy(cfg).next_specs({})  # no hidden state
    for mod in ("grid", "tpe", "greedy", "compose", "sequential", "strategy", "trial"):
        src = importlib.import_module(f"laserkit.search.{mod}").__file__
        assert ".store" not in open(src).read()  # planners do not touch the database


def shuffled_workers(store, ctx, in_flight: int, seed: int) -> dict:
    """The engine as several workers would run it: up to ``in_flight`` trials taken at once
    and completed in a random order, the strategy asked whenever the queue is empty."""
    rng = random.Random(seed)
    while True:
        popped = [p for p in (store.pop() for _ in range(in_flight)) if p is not None]
        if popped:
            rng.shuffle(popped)
            for p in popped:
                scored = ctx.score(p.spec)
                store.complete(p, scored, ctx.value(scored))
            continue
        specs = ctx.strategy.next_specs(store.results())
        if specs is None:
            return finalize(store, ctx.strategy)
        store.enqueue(specs)


@pytest.mark.parametrize("strategy", ["tpe", "compose", "grid"])
def test_the_table_does_not_depend_on_how_many_trials_run_at_once(tmp_path, strategy):
    model = make_tiny("llama")
    cfg = grid_cfg(
        model, layers=(8, 9, 10, 11), rhos=(0.5, 0.05), strategy=strategy, trials=8, batch=3, seed=3
    )
    reference = run_grid(tmp_path / "one", cfg, model)
    for in_flight, seed in ((2, 0), (3, 1)):
        store = store_at(tmp_path / f"{in_flight}", cfg)
        result = shuffled_workers(store, Context(cfg, model), in_flight, seed)
        for r in (result, reference):
            for s in (*r["base"].values(), *r["best"].values()):
                s.pop("seconds", None)
        assert result == reference


def test_database_urls_name_an_installed_driver(monkeypatch):
    url = normalize_url("postgresql://u:p@db.example/laserkit")
    assert url == "postgresql+psycopg://u:p@db.example/laserkit"  # psycopg 3, the extra's
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(LaserkitError, match=r"pip install 'laserkit\[postgres\]'"):
        normalize_url("postgresql://u:p@db.example/laserkit")
    with pytest.raises(LaserkitError, match="not a database URL"):
        normalize_url("db.example/laserkit")


@pytest.mark.parametrize("batch", [1, 3])
def test_tpe_with_the_whole_space_as_budget_proposes_every_point_once(batch):
    """Near the end of a small space TPE keeps proposing what it has seen; the untried points
    are then taken in grid order, so the budget is spent on distinct trials."""
    from laserkit.search import Result

    model = make_tiny("llama")
    cfg = grid_cfg(
        model, layers=tuple(range(6, 12)), rhos=(0.2, 0.1, 0.05, 0.01), strategy="tpe", batch=batch
    )
    plan = make_strategy(cfg)
    rng = random.Random(0)
    done: dict = {}
    proposed: list[str] = []
    while (specs := plan.next_specs(done)) is not None:
        assert len(specs) <= batch or specs[0]["split"] != "validation" or not specs[0]["edits"]
        for s in specs:
            proposed += [s["key"]] if s["edits"] and s["split"] == "validation" else []
            done[s["key"]] = Result(
                len(done), s, {"accuracy": rng.randint(0, 5) / 5, "log_loss": 1.0}
            )
    space = {
        f"validation|{n}@{layer}:rank-reduction(ρ={r:g})"
        for n in cfg.params.lnames
        for layer in cfg.params.layers
        for r in cfg.params.rhos
    }
    assert len(proposed) == len(space) and set(proposed) == space
