"""The reference's selection rule (the base model never a candidate) and the run definitions
that tell old runs from new, side by side with a transcription of the reference's loop
(pratyushasharma/laser d391375, src/intervention_gptj_bbh.py lines 339–367)."""

from __future__ import annotations

import itertools
import json

import pytest
from conftest import make_tiny
from test_search import grid_cfg, run_grid, store_at

from laserkit import Intervention, LaserkitError
from laserkit.search import RunConfig
from laserkit.search.config import DEFINITIONS, ObjectiveConfig
from laserkit.search.grid import GridPlan
from laserkit.search.trial import Result, edit, make

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_choice(layers, lnames, rates, results):
    """Transcribed from the reference's loop: layers in its order, τ in order, rates reversed;
    ``best`` replaced only on a strictly higher accuracy or an equal one with a strictly lower
    log-loss; the base run (lname "dont") is logged, never compared."""
    best = best_key = None
    for lnum in layers:
        for lname in lnames:
            for rate in reversed(rates):
                acc, loss = results[(lnum, lname, rate)]
                if best is None or acc > best[0] or (acc == best[0] and loss < best[1]):
                    best, best_key = (acc, loss), (lnum, lname, rate)
    return best_key


def _results(layers, lnames, rates, values):
    """Validation results of a grid (ρ = (10 − rate)·0.1) plus a base that beats them all."""
    plan_edits, done = [], {}
    base = make("validation", "validation", [], order=-1)
    done[base["key"]] = Result(0, base, {"accuracy": 0.99, "log_loss": 0.1, "n": 10})
    specs = {}
    for i, (layer, lname, rate) in enumerate(itertools.product(layers, lnames, rates)):
        iv = Intervention(rho=(10 - rate) * 0.1)
        spec = make("validation", "validation", [edit(lname, layer, iv)], order=i)
        acc, loss = values[(layer, lname, rate)]
        done[spec["key"]] = Result(i + 1, spec, {"accuracy": acc, "log_loss": loss, "n": 10})
        specs[spec["key"]] = (layer, lname, rate)
        plan_edits.append(spec["edits"])
    return done, specs


@pytest.mark.parametrize("seed", range(6))
def test_reference_rule_matches_the_transcribed_loop_where_the_base_wins(seed):
    import random

    rnd = random.Random(seed)
    layers, lnames, rates = [11, 10, 9], ["fc_in", "fc_out"], [1.0, 5.0, 9.0, 9.9]
    # few distinct values: many ties on accuracy and on log-loss
    values = {
        k: (rnd.choice([0.3, 0.5, 0.6]), rnd.choice([1.0, 2.0]))
        for k in itertools.product(layers, lnames, rates)
    }
    done, specs = _results(layers, lnames, rates, values)
    cfg = RunConfig(
        strategy="grid",
        model="m",
        objective=ObjectiveConfig(type="next-token"),
        intervention=Intervention(rho=1.0).to_dict(),
        lnames=lnames,
        layers=layers,
        rhos=[(10 - r) * 0.1 for r in rates],
        selection="reference",
    )
    ref = GridPlan(cfg).best(done)
    want = reference_choice(layers, lnames, rates, values)
    assert specs[ref.key] == want
    # laserkit's rule keeps the base model, which wins validation here
    cfg.selection = "laserkit"
    assert GridPlan(cfg).best(done).spec["edits"] == []


def test_reference_selection_end_to_end_never_chooses_the_base(tmp_path):
    model = make_tiny("llama")
    cfg = grid_cfg(model, rhos=(0.0,), selection="reference")
    result = run_grid(tmp_path, cfg, model)
    assert result["chosen"]["edits"], "the reference's rule always reports an intervention"
    rows = result["trials"]
    best = max(rows, key=lambda r: (r["accuracy"], -r["log_loss"]))
    assert (result["best"]["validation"]["accuracy"], result["best"]["validation"]["log_loss"]) == (
        best["accuracy"],
        best["log_loss"],
    )
    assert result["best"]["test"] is not result["base"]["test"]


def test_old_runs_are_told_apart_and_resumed_only_when_nothing_changes(tmp_path):
    model = make_tiny("llama")
    cfg = grid_cfg(model, layers=(11,), rhos=(0.5, 0.1))
    first = run_grid(tmp_path, cfg, model)
    store = store_at(tmp_path)
    old = {k: v for k, v in store.config.to_json().items() if k != "definitions"}
    store.study.set_user_attr("config", old)  # as a run made before runs stored definitions
    assert RunConfig.from_json(old).definitions == 1
    n_before = len(store.results())
    again = run_grid(tmp_path, cfg, model, resume=True)  # ρ 0.5, 0.1: no width differs
    assert len(store_at(tmp_path).results()) == n_before  # zero new trials
    assert json.loads(json.dumps(first)) == again
    assert store_at(tmp_path).config.definitions == DEFINITIONS  # stamped current


def test_an_old_run_whose_numbers_would_change_is_refused(tmp_path):
    model = make_tiny("llama")
    cfg = grid_cfg(model, layers=(11,), rhos=(0.7,))  # 90 wide: int(62.99…) = 62, old 63
    run_grid(tmp_path, cfg, model)
    store = store_at(tmp_path)
    old = {k: v for k, v in store.config.to_json().items() if k != "definitions"}
    store.study.set_user_attr("config", old)
    with pytest.raises(
        LaserkitError,
        match=r"older definitions and its ρ 0.7 keeps another "
        r"rank.*start a new run",
    ):
        run_grid(tmp_path, cfg, model, resume=True)
    gen = RunConfig.from_json(
        {**old, "objective": {"type": "task", "task": "hotpotqa"}, "rhos": [0.5]}
    )
    assert "sum over the answer" in gen.legacy_conflicts()[0]
    mc = RunConfig.from_json(
        {**old, "objective": {"type": "task", "task": "fever"}, "rhos": [0.9, 0.5, 0.1, 0.01]}
    )
    assert mc.legacy_conflicts() == []


def test_unknown_selection_is_refused():
    with pytest.raises(LaserkitError, match="unknown --selection 'best'"):
        RunConfig(
            strategy="grid",
            model="m",
            objective=ObjectiveConfig(type="next-token"),
            lnames=["fc_in"],
            layers=[1],
            rhos=[0.5],
            selection="best",
        ).check()


def test_a_worker_refuses_to_continue_an_old_run_it_would_mix(tmp_path):
    from laserkit.search import Context, run

    model = make_tiny("llama")
    cfg = grid_cfg(model, layers=(11,), rhos=(0.7,))
    store = store_at(tmp_path, cfg)  # created, no trial run yet
    old = {k: v for k, v in store.config.to_json().items() if k != "definitions"}
    store.study.set_user_attr("config", old)
    joined = store_at(tmp_path)  # as `laserkit worker URL --run NAME` attaches
    with pytest.raises(LaserkitError, match="older definitions.*mix two definitions"):
        run(joined, ctx=Context(joined.config, model))
    assert joined.results() == {}


def test_an_old_rate_run_is_refused_with_the_reason(tmp_path):
    from laserkit.interventions.rank_reduction import legacy_rho_from_rate, rho_from_rate

    model = make_tiny("llama")
    old_cfg = grid_cfg(model, layers=(11,), rhos=(legacy_rho_from_rate(9.9),))
    store = store_at(tmp_path, old_cfg)
    old = {k: v for k, v in store.config.to_json().items() if k != "definitions"}
    store.study.set_user_attr("config", old)
    new_cfg = grid_cfg(model, layers=(11,), rhos=(rho_from_rate(9.9),))
    with pytest.raises(LaserkitError, match=r"1 − 0.1·rate.*start a new run"):
        store_at(tmp_path, new_cfg, resume=True)
