"""Each strategy's own typed parameters (search/params.py): checked by their class, held by
RunConfig, stored in 0.1's flat layout so that runs made before read back unchanged."""

import dataclasses
import json
import sqlite3
import tarfile
from pathlib import Path

import pytest

from laserkit import LaserkitError
from laserkit.search.config import ObjectiveConfig, RunConfig
from laserkit.search.params import (
    ComposeParams,
    GreedyParams,
    GridParams,
    TPEParams,
    params_for,
)

TESTS = Path(__file__).parent
OBJ = ObjectiveConfig(task="fever-bigbench", limit=20)
CAND = {"lname": "fc_in", "layer": 1, "intervention": {"kind": "mp-threshold"}}

# 0.1's stored layout, written out by hand: every strategy's keys side by side, in this order
LAYOUT = [
    "strategy",
    "model",
    "objective",
    "intervention",
    "lnames",
    "layers",
    "rhos",
    "candidates",
    "halving",
    "trials",
    "batch",
    "seed",
    "dtype",
    "prefix_cache",
    "cache_bytes",
    "heartbeat_s",
    "grace_s",
    "trust_remote_code",
    "selection",
    "definitions",
]


def test_each_strategy_gets_its_own_parameters_class():
    space = dict(lnames=["fc_in"], layers=[2, 1], rhos=[0.1, 0.5])
    grid = RunConfig(strategy="grid", model="m", objective=OBJ, halving=3, **space)
    tpe = RunConfig(strategy="tpe", model="m", objective=OBJ, trials=4, batch=2, **space)
    compose = RunConfig(strategy="compose", model="m", objective=OBJ, **space)
    greedy = RunConfig(strategy="greedy", model="m", objective=OBJ, candidates=[CAND])
    assert grid.params == GridParams(lnames=["fc_in"], layers=[2, 1], rhos=[0.1, 0.5], halving=3)
    assert tpe.params == TPEParams(
        lnames=["fc_in"], layers=[2, 1], rhos=[0.1, 0.5], trials=4, batch=2
    )
    assert compose.params == ComposeParams(lnames=["fc_in"], layers=[2, 1], rhos=[0.1, 0.5])
    assert greedy.params == GreedyParams(candidates=[CAND])
    assert not hasattr(greedy.params, "rhos") and not hasattr(compose.params, "halving")
    assert [params_for(s) for s in ("grid", "tpe", "greedy", "compose")] == [
        GridParams,
        TPEParams,
        GreedyParams,
        ComposeParams,
    ]


def test_the_stored_json_keeps_the_flat_layout_of_0_1():
    cfg = RunConfig(strategy="greedy", model="m", objective=OBJ, candidates=[CAND], seed=3)
    d = cfg.to_json()
    assert list(d) == LAYOUT
    assert d["candidates"] == [CAND] and d["seed"] == 3
    assert (d["lnames"], d["layers"], d["rhos"]) == ([], [], [])
    assert (d["halving"], d["trials"], d["batch"]) == (None, None, 1)
    assert RunConfig.from_json(json.loads(json.dumps(d))) == cfg
    tpe = RunConfig(
        strategy="tpe", model="m", objective=OBJ, lnames=["a"], layers=[1], rhos=[0.5], trials=2
    )
    t = tpe.to_json()
    assert list(t) == LAYOUT and (t["trials"], t["batch"], t["candidates"]) == (2, 1, [])


def test_the_stored_configs_of_runs_made_before_read_back_key_for_key(tmp_path):
    with tarfile.open(TESTS / "data" / "runs-before-kinds.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    seen = 0
    for db in sorted(tmp_path.glob("*/trials.db")):
        con = sqlite3.connect(db)
        rows = con.execute(
            "SELECT value_json FROM study_user_attributes WHERE key = 'config'"
        ).fetchall()
        con.close()
        for (text,) in rows:
            stored = json.loads(text)
            again = RunConfig.from_json(stored).to_json()
            # every stored key, in its place, with its value; what 0.1 added since (and adds to
            # such a run on reading it, as before) at its default
            assert [k for k in again if k in stored] == list(stored), db.parent.name
            assert {k: again[k] for k in stored if k != "objective"} == {
                k: v for k, v in stored.items() if k != "objective"
            }
            obj = stored["objective"]
            assert {k: again["objective"][k] for k in obj} == obj
            assert set(again["objective"]) - set(obj) <= {"max_new_tokens"}
            added = {k: again[k] for k in set(again) - set(stored)}
            assert added == {"trust_remote_code": False, "selection": "laserkit", "definitions": 1}
            seen += 1
    assert seen == 4


@pytest.mark.parametrize(
    ("strategy", "given", "message"),
    [
        ("tpe", {"halving": 2}, "--halving applies to the grid strategy only"),
        ("greedy", {"halving": 2}, "--halving applies to the grid strategy only"),
        ("grid", {"trials": 3}, "--trials applies to --strategy tpe (the grid runs all of it)"),
        ("tpe", {"trials": 0}, "--trials and --batch must be at least 1"),
        ("tpe", {"batch": 0}, "--trials and --batch must be at least 1"),
    ],
)
def test_an_option_the_strategy_does_not_take_is_refused_by_its_class(strategy, given, message):
    space = dict(num_layers=4, lname="fc_in", lnum="3", rho="0.5")
    with pytest.raises(LaserkitError) as e:
        RunConfig.from_cli(strategy, "m", OBJ, **space, **given)
    assert str(e.value) == message


def test_0_1_s_flat_keywords_still_build_a_config_and_keep_what_is_the_strategy_s():
    # as 0.1's RunConfig(...) did, a keyword of another strategy is accepted and has no effect
    cfg = RunConfig(strategy="greedy", model="m", objective=OBJ, candidates=[CAND], trials=4)
    assert cfg.params == GreedyParams(candidates=[CAND]) and cfg.to_json()["trials"] is None
    with pytest.raises(LaserkitError, match="^unknown strategy parameter 'bogus'$"):
        RunConfig(strategy="grid", model="m", objective=OBJ, bogus=1)
    with pytest.raises(LaserkitError, match="^unknown strategy 'nope': use one of grid, tpe"):
        RunConfig(strategy="nope", model="m", objective=OBJ)


def test_the_space_and_selection_are_checked_by_the_strategy_s_class():
    with pytest.raises(LaserkitError, match=r"^compose needs τ \(--lname\)"):
        RunConfig.from_cli("compose", "m", OBJ, lname="fc_in", rho="0.1")
    with pytest.raises(LaserkitError, match="applies to search"):
        RunConfig.from_cli("greedy", "m", OBJ, candidates=[CAND], selection="reference")
    ok = RunConfig.from_cli(
        "tpe", "m", OBJ, num_layers=4, lname="fc_in", lnum="3", rho="0.5", selection="reference"
    )
    assert ok.params == TPEParams(lnames=["fc_in"], layers=[3], rhos=[0.5])


def test_replace_moves_parameters_to_another_strategy_s_class():
    grid = RunConfig(
        strategy="grid", model="m", objective=OBJ, lnames=["a"], layers=[1], rhos=[0.5]
    )
    tpe = dataclasses.replace(grid, strategy="tpe", trials=None, batch=2)
    assert tpe.params == TPEParams(lnames=["a"], layers=[1], rhos=[0.5], batch=2)
    assert dataclasses.replace(grid, model="n").params is grid.params
    halved = RunConfig(**{**_kw(grid), "halving": 2})
    assert dataclasses.replace(halved, strategy="compose").params == ComposeParams(
        lnames=["a"], layers=[1], rhos=[0.5]
    )
    with pytest.raises(TypeError, match="a grid run has no GreedyParams"):
        grid.params_as(GreedyParams)


def test_identity_sorts_layers_and_rhos_and_ignores_what_a_strategy_lacks():
    a = RunConfig(
        strategy="grid", model="m", objective=OBJ, lnames=["a"], layers=[2, 1], rhos=[0.1, 0.5]
    )
    b = RunConfig(
        strategy="grid",
        model="m",
        objective=OBJ,
        lnames=["a"],
        layers=[1, 2],
        rhos=[0.5, 0.1],
        batch=4,  # 0.1 accepted --batch with the grid, which runs every trial anyway
    )
    assert a.differs(b) == [] and a.identity() == b.identity()
    c = RunConfig(**{**_kw(a), "halving": 2})
    assert a.differs(c) == ["halving"]


def _kw(cfg: RunConfig) -> dict:
    return {**cfg.to_json(), "objective": cfg.objective}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            ["--strategy", "tpe", "--halving", "2"],
            "laserkit: error: --halving applies to the grid strategy only",
        ),
        (
            ["--trials", "3"],
            "laserkit: error: --trials applies to --strategy tpe (the grid runs all of it)",
        ),
    ],
)
def test_the_installed_command_refuses_another_strategy_s_option_in_one_line(
    tmp_path, default_model_dir, given, message
):
    import os
    import subprocess
    import sys

    cmd = [str(Path(sys.prefix) / "bin" / "laserkit"), "search", str(default_model_dir)]
    args = ["--task", "fever-bigbench", "--limit", "10", "--lname", "fc_in", "--lnum=-1"]
    res = subprocess.run(
        [*cmd, *args, "--rho", "0.5", "--device", "cpu", "--run-dir", "run", *given],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"},
    )
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert (res.returncode, lines) == (2, [message]), res.stderr[-2000:]
