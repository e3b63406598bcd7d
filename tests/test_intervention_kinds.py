"""Intervention kinds as spec classes registered by name (docs/interventions.md).

- What main wrote before the kinds had classes is pinned: to_dict (with its key order), describe
  and the trial key of representative interventions of every kind, and the run templates the
  commands stored; run directories made by main's code (tests/data/runs-before-kinds.tar.gz,
  made by tests/data/make_runs_before_kinds.py) resume with zero new trials.
- A kind laserkit does not ship (tests/throwaway_kind.py) is one file: the Editor applies it with
  the factors it asks for, KINDS, errors and the command line list it.
- The installed ``laserkit`` command: options generated from the kinds, an option of the wrong
  kind refused in one line with nothing written.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny

from laserkit import Editor, Intervention, LaserkitError
from laserkit.cli.options import build, collect
from laserkit.interventions import KINDS, uses_svd
from laserkit.interventions.base import unregister
from laserkit.search import trial

TESTS = Path(__file__).parent
BIN = Path(sys.prefix) / "bin" / "laserkit"
LASERKIT = str(BIN) if BIN.exists() else shutil.which("laserkit")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}  # help lines unwrapped

# Captured from main (4de13b5, the flat dataclass) before the kinds had classes: the arguments,
# then to_dict's output in its key order, then describe(). Trial keys are "<lname>@<layer>:" +
# describe(), and to_dict is what specs and records store: neither may change meaning.
PINNED = [
    (dict(rho=0.01), {"kind": "rank-reduction", "rho": 0.01}, "rank-reduction(ρ=0.01)"),
    (
        dict(kind="rank-reduction", rho=1.0),
        {"kind": "rank-reduction", "rho": 1.0},
        "rank-reduction(ρ=1)",
    ),
    (
        dict(kind="rank-reduction", rho=1),
        {"kind": "rank-reduction", "rho": 1},
        "rank-reduction(ρ=1)",
    ),
    (
        dict(kind="rank-reduction", rho=0.05, bandwidth=1.0, estimator="iqr", q=1.0),
        {"kind": "rank-reduction", "rho": 0.05},
        "rank-reduction(ρ=0.05)",
    ),
    (
        dict(kind="vendi-score", rho=0.1),
        {
            "kind": "vendi-score",
            "rho": 0.1,
            "use_quality": False,
            "min_diversity": False,
            "q": 1.0,
            "bandwidth": 1.0,
        },
        "vendi-score(ρ=0.1)",
    ),
    (
        dict(kind="vendi-score", rho=0.1, use_quality=True),
        {
            "kind": "vendi-score",
            "rho": 0.1,
            "use_quality": True,
            "min_diversity": False,
            "q": 1.0,
            "bandwidth": 1.0,
        },
        "vendi-score(ρ=0.1, use_quality)",
    ),
    (
        dict(kind="vendi-score", rho=0.2, min_diversity=True, q=2.0),
        {
            "kind": "vendi-score",
            "rho": 0.2,
            "use_quality": False,
            "min_diversity": True,
            "q": 2.0,
            "bandwidth": 1.0,
        },
        "vendi-score(ρ=0.2, min_diversity, q=2)",
    ),
    (
        dict(kind="vendi-score", rho=0.5, bandwidth="median"),
        {
            "kind": "vendi-score",
            "rho": 0.5,
            "use_quality": False,
            "min_diversity": False,
            "q": 1.0,
            "bandwidth": "median",
        },
        "vendi-score(ρ=0.5, bandwidth=median)",
    ),
    (
        dict(kind="vendi-score", rho=0.5, bandwidth=2),
        {
            "kind": "vendi-score",
            "rho": 0.5,
            "use_quality": False,
            "min_diversity": False,
            "q": 1.0,
            "bandwidth": 2.0,
        },
        "vendi-score(ρ=0.5, bandwidth=2)",
    ),
    (
        dict(kind="vendi-score", rho=0.5, bandwidth="0.5", use_quality=True, q=0.0),
        {
            "kind": "vendi-score",
            "rho": 0.5,
            "use_quality": True,
            "min_diversity": False,
            "q": 0.0,
            "bandwidth": 0.5,
        },
        "vendi-score(ρ=0.5, use_quality, q=0, bandwidth=0.5)",
    ),
    (
        dict(kind="vendi-score", rho=1.0, bandwidth="1"),
        {
            "kind": "vendi-score",
            "rho": 1.0,
            "use_quality": False,
            "min_diversity": False,
            "q": 1.0,
            "bandwidth": 1.0,
        },
        "vendi-score(ρ=1)",
    ),
    (dict(kind="mp-threshold"), {"kind": "mp-threshold", "rho": None}, "mp-threshold"),
    (
        dict(kind="mp-threshold", estimator="gavish-donoho"),
        {"kind": "mp-threshold", "rho": None, "estimator": "gavish-donoho"},
        "mp-threshold(gavish-donoho)",
    ),
    (
        dict(kind="mp-threshold", estimator="iqr"),
        {"kind": "mp-threshold", "rho": None},
        "mp-threshold",
    ),
    (dict(kind="dont"), {"kind": "dont", "rho": None}, "dont"),
]

# The intervention templates main's `search` and `compose` stored in a run's configuration (part
# of what a --resume must repeat), from the options a user gives.
SEARCH, ALL = ("rank-reduction", "vendi-score"), KINDS.names()
TEMPLATES = [
    (SEARCH, "rank-reduction", {}, {"kind": "rank-reduction", "rho": 1.0}),
    (
        SEARCH,
        "vendi-score",
        {"use_quality": True, "bandwidth": "median"},
        {
            "kind": "vendi-score",
            "rho": 1.0,
            "use_quality": True,
            "min_diversity": False,
            "q": 1.0,
            "bandwidth": "median",
        },
    ),
    (ALL, "rank-reduction", {}, {"kind": "rank-reduction", "rho": 1.0}),
    (
        ALL,
        "vendi-score",
        {"bandwidth": "2"},
        {
            "kind": "vendi-score",
            "rho": 1.0,
            "use_quality": False,
            "min_diversity": False,
            "q": 1.0,
            "bandwidth": 2.0,
        },
    ),
    (ALL, "mp-threshold", {}, {"kind": "mp-threshold", "rho": 1.0}),
]


@pytest.mark.parametrize(("args", "as_dict", "text"), PINNED, ids=[t for _, _, t in PINNED])
def test_to_dict_and_describe_are_main_s(args, as_dict, text):
    iv = Intervention(**args)
    assert json.dumps(iv.to_dict()) == json.dumps(as_dict)  # values, types and key order
    assert iv.describe() == text
    e = trial.edit("fc_in", 3, iv)
    assert trial.make("validation", "validation", [e])["key"] == f"validation|fc_in@3:{text}"
    back = Intervention.from_dict(json.loads(json.dumps(iv.to_dict())))
    assert back == iv and hash(back) == hash(iv) and back.kind == iv.kind
    assert isinstance(iv, Intervention) and type(iv) is KINDS.get(iv.kind)


@pytest.mark.parametrize(("kinds", "kind", "given", "stored"), TEMPLATES)
def test_run_templates_are_main_s(kinds, kind, given, stored):
    from laserkit.cli.search import _iv

    opts = collect(kinds, sweep=True)
    values = {
        "use_quality": False,
        "min_diversity": False,
        "q": 1.0,
        "bandwidth": "1",
        "estimator": "iqr",
        **given,
    }  # the CLI's defaults, as typer passes them
    values = {k: v for k, v in values.items() if k in {o.name for o in opts}}
    assert json.dumps(_iv(build(kind, values, opts, sweep=True))) == json.dumps(stored)


def test_stored_records_of_older_runs_still_read():
    """Records main wrote: a compose template's ρ on mp-threshold is not part of the kind (and
    never was of its key); unknown kinds are one line naming the kinds."""
    iv = Intervention.from_dict({"kind": "mp-threshold", "rho": 0.1})
    assert iv == Intervention(kind="mp-threshold") and iv.describe() == "mp-threshold"
    assert Intervention.from_dict({"kind": "rank-reduction", "rho": 0.5}).rho == 0.5
    with pytest.raises(
        LaserkitError,
        match="unknown intervention 'magic': use one of "
        "rank-reduction, vendi-score, mp-threshold, dont",
    ):
        Intervention.from_dict({"kind": "magic"})


def test_equality_hashing_and_construction_rules():
    a = Intervention(kind="vendi-score", rho=0.1, bandwidth="median")
    b = Intervention.from_dict({"kind": "vendi-score", "rho": 0.1, "bandwidth": "median"})
    assert a == b and len({a, b, Intervention(kind="vendi-score", rho=0.2)}) == 2
    assert Intervention(kind="mp-threshold") != Intervention(kind="dont")
    assert KINDS.get("rank-reduction")(rho=0.3) == Intervention(rho=0.3)
    assert pickle.loads(pickle.dumps(a)) == a and dataclasses.replace(a, rho=0.2).rho == 0.2
    # options of another kind: refused with a value other than their default, in one line
    for kw, says in [
        (
            dict(rho=0.1, bandwidth=2.0),
            "--bandwidth 2.0 applies to vendi-score, not to rank-reduction",
        ),
        (
            dict(kind="mp-threshold", rho=0.5),
            "--rho 0.5 applies to rank-reduction, vendi-score, not to mp-threshold",
        ),
        (dict(kind="dont", use_quality=True), "--use-quality applies to vendi-score, not to dont"),
        (dict(rho=0.1, wobble=1), "'wobble' is no option of any intervention"),
    ]:
        with pytest.raises(LaserkitError) as err:
            Intervention(**kw)
        assert says in str(err.value) and "\n" not in str(err.value)
    # ... and accepted at their default, also when spelled as the CLI passes it
    assert Intervention(rho=0.1, bandwidth="1", estimator="iqr", use_quality=False) == Intervention(
        rho=0.1
    )
    with pytest.raises(LaserkitError, match="needs --rho"):
        Intervention(kind="vendi-score")
    with pytest.raises(LaserkitError, match="Vendi order q -1"):
        Intervention(kind="vendi-score", rho=0.1, q=-1)


@pytest.fixture
def keep_top():
    """The throwaway kind, registered for one test and taken back (other tests list KINDS)."""
    sys.modules.pop("throwaway_kind", None)
    module = importlib.import_module("throwaway_kind")
    yield module
    unregister("keep-top")
    sys.modules.pop("throwaway_kind", None)


def test_a_new_kind_is_one_file_applied_through_the_editor(keep_top):
    assert KINDS.names()[-1] == "keep-top" and "keep-top" in uses_svd()
    with pytest.raises(LaserkitError, match="use one of .*dont, keep-top"):
        Intervention(kind="nope")
    model = make_tiny("llama", num_hidden_layers=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ed = Editor(model)
    iv = Intervention(kind="keep-top", top=2)
    assert type(iv) is keep_top.KeepTop and iv.describe() == "keep-top(top=2)"
    assert iv.to_dict() == {"kind": "keep-top", "rho": None, "top": 2}
    assert Intervention.from_dict(iv.to_dict()) == iv
    (rec,) = ed.apply("fc_in", 1, iv)
    # the Editor gave it the float64 factors it asked for, from its cache
    assert rec["cached"] and rec["factor_dtype"] == "torch.float64" and ed.cache.misses == 1
    assert rec["kind"] == "keep-top" and rec["top"] == 2 and rec["rank"] == 2
    # independent check: numpy's SVD of the original matrix, rank 2, in float64
    (target,) = ed.targets("fc_in", 1)
    W = before[target.param].double().numpy()
    U, S, Vt = np.linalg.svd(W, full_matrices=False)
    want = (U[:, :2] * S[:2]) @ Vt[:2]
    got = model.state_dict()[target.param].double().numpy()
    assert np.abs(got - want).max() < 1e-6 * np.abs(W).max()
    assert abs(rec["rel_error"] - np.linalg.norm(W - want) / np.linalg.norm(W)) < 1e-6
    ed.restore()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(LaserkitError, match="--top 2 applies to keep-top, not to rank-reduction"):
        Intervention(rho=0.1, top=2)


def _laserkit(*args: str, plugin: bool = False) -> subprocess.CompletedProcess:
    """The installed command, or (``plugin``) the same CLI after importing the throwaway kind."""
    if plugin:
        cmd = [
            sys.executable,
            "-c",
            "import sys, throwaway_kind; from laserkit.cli import run; sys.exit(run(sys.argv[1:]))",
            *args,
        ]
        env = {**ENV, "PYTHONPATH": os.pathsep.join([str(TESTS), ENV.get("PYTHONPATH", "")])}
    else:
        cmd, env = [LASERKIT, *args], ENV
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_the_installed_command_offers_and_checks_the_kinds_options(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    assert LASERKIT, "the laserkit console script is not installed"
    make_tiny("llama", num_hidden_layers=2).save_pretrained(tmp_path / "tiny")
    tiny = str(tmp_path / "tiny")
    red = ["reduce", tiny, "--lname", "fc_in", "--lnum", "1"]
    runs = {
        "help": ((["reduce", "--help"],), {}),
        "greedy help": ((["greedy", "--help"],), {}),
        "ok": (
            (
                [
                    *red,
                    "--intervention",
                    "vendi-score",
                    "--rate",
                    "5",
                    "--bandwidth",
                    "median",
                    "--out",
                    str(tmp_path / "ok"),
                ],
            ),
            {},
        ),
        "wrong kind": (
            ([*red, "--rho", "0.5", "--bandwidth", "2", "--out", str(tmp_path / "bad")],),
            {},
        ),
        "rate with mp": (
            (
                [
                    *red,
                    "--rate",
                    "5",
                    "--intervention",
                    "mp-threshold",
                    "--out",
                    str(tmp_path / "bad2"),
                ],
            ),
            {},
        ),
        "plugin help": ((["reduce", "--help"],), {"plugin": True}),
        "plugin": (
            ([*red, "--intervention", "keep-top", "--top", "3", "--out", str(tmp_path / "plug")],),
            {"plugin": True},
        ),
    }
    with ThreadPoolExecutor(4) as pool:
        futures = {k: pool.submit(_laserkit, *a[0], **kw) for k, (a, kw) in runs.items()}
        ran = {k: f.result() for k, f in futures.items()}

    def flat(out: str) -> str:
        return " ".join(out.replace("│", " ").split())

    text = flat(ran["help"].stdout)
    for flag, words in [
        ("--intervention", "rank-reduction, vendi-score, mp-threshold, dont"),
        ("--rho", "fraction of the rank kept"),
        ("--rate", "reference CLI rate"),
        ("--use-quality", "quality-weighted"),
        ("--min-diversity", "minimise"),
        ("--vendi-q", "order q"),
        ("--bandwidth", "'median'"),
        ("--estimator", "gavish-donoho"),
    ]:
        assert flag in text and words in text, (flag, words)
    assert ran["help"].returncode == 0 and "keep-top" not in text
    greedy = flat(ran["greedy help"].stdout)
    assert "--estimator" in greedy and "--intervention" not in greedy

    ok = ran["ok"]
    assert ok.returncode == 0, ok.stderr
    rec = json.loads((tmp_path / "ok" / "laserkit.json").read_text())
    assert "vendi-score(ρ=0.5, bandwidth=median)" in ok.stdout
    assert '"bandwidth": "median"' in json.dumps(rec)
    for name, says in [
        ("wrong kind", "--bandwidth 2 applies to vendi-score, not to rank-reduction"),
        ("rate with mp", "--rate applies to rank-reduction, vendi-score, not to mp-threshold"),
    ]:
        r = ran[name]
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and lines == [f"laserkit: error: {says}"], r.stderr
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()

    plug = flat(ran["plugin help"].stdout)
    assert "keep-top" in plug and "--top" in plug and "how many singular values" in plug
    assert ran["plugin"].returncode == 0, ran["plugin"].stderr
    rec = json.loads((tmp_path / "plug" / "laserkit.json").read_text())
    assert '"kind": "keep-top"' in json.dumps(rec) and '"top": 3' in json.dumps(rec)


def test_the_command_line_imports_no_torch_to_build_its_options():
    """`laserkit --help` and usage errors stay fast: the kinds and their options load without
    torch (interventions/base.py)."""
    code = "import sys, laserkit.cli.reduce, laserkit.cli.search; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV
    )
    assert out.stdout.strip() == "False", out.stderr


def _tiny_next_token(model) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    seqs = torch.randint(0, model.config.vocab_size, (40, 8), generator=g)
    with torch.no_grad():
        pred = model(input_ids=seqs[:, :-1]).logits[:, -1].argmax(-1)
    seqs[::2, -1] = pred[::2]
    return seqs.tolist()


def test_run_directories_made_before_the_kinds_resume_with_zero_new_trials(tmp_path):
    """Four finished runs made by main's code (grid over Vendi with median bandwidth and quality,
    grid over rank-reduction, greedy with both MP estimators, compose with mp-threshold), resumed
    with configurations built by today's code as the commands build them: nothing is re-run and
    the result is the stored one."""
    from laserkit.cli.search import _iv
    from laserkit.search import ObjectiveConfig, RunConfig, start
    from laserkit.search.greedy import candidate_edits
    from laserkit.search.where import open_run

    with tarfile.open(TESTS / "data" / "runs-before-kinds.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    torch.set_num_threads(1)
    model = make_tiny("llama", num_hidden_layers=3)
    obj = ObjectiveConfig(type="next-token", sequences=_tiny_next_token(model), batch_size=8)
    search = collect(SEARCH, sweep=True)
    every = collect(ALL, sweep=True)
    cands = candidate_edits(
        [("m", 2, "fc_in")], Intervention(kind="mp-threshold", estimator="gavish-donoho")
    ) + candidate_edits([("m", 1, "fc_out")], Intervention(kind="mp-threshold"))
    cfgs = {
        "grid-vendi": RunConfig(
            strategy="grid",
            model="tiny",
            objective=obj,
            lnames=["fc_in"],
            layers=[2],
            rhos=[0.5, 0.25],
            intervention=_iv(
                build("vendi-score", {"use_quality": True, "bandwidth": "median"}, search, True)
            ),
        ),
        "grid-rank": RunConfig(
            strategy="grid",
            model="tiny",
            objective=obj,
            lnames=["fc_in", "fc_out"],
            layers=[2],
            rhos=[0.5],
            intervention=_iv(build("rank-reduction", {}, search, True)),
        ),
        "greedy-mp": RunConfig(strategy="greedy", model="tiny", objective=obj, candidates=cands),
        "compose-mp": RunConfig(
            strategy="compose",
            model="tiny",
            objective=obj,
            lnames=["fc_in"],
            layers=[1, 2],
            rhos=[0.5],
            intervention=_iv(build("mp-threshold", {}, every, True)),
        ),
    }
    loaded = type("Loaded", (), {"model": model, "tokenizer": None})
    for name, cfg in cfgs.items():
        run_dir = tmp_path / name
        old = open_run(run_dir)
        stored, keys = old.result(), set(old.results())
        assert stored is not None and len(keys) >= 4
        result, store = start(cfg, run_dir=run_dir, resume=True, loaded=loaded)
        assert set(store.results()) == keys, f"{name}: trials were added"
        assert result["chosen"] == stored["chosen"], name


def test_greedy_takes_the_estimator_option(tmp_path, default_model_dir):
    """greedy's options are mp-threshold's: --estimator reaches every candidate's edit."""
    from transformers import AutoTokenizer
    from typer.testing import CliRunner

    from laserkit.cli import _register, app

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    make_tiny("llama", vocab_size=len(tok), num_hidden_layers=3).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    _register()
    res = CliRunner().invoke(
        app,
        [
            "greedy",
            str(tmp_path / "m"),
            "--task",
            "fever-bigbench",
            "--limit",
            "10",
            "--candidates",
            "2",
            "--estimator",
            "gavish-donoho",
            "--run-dir",
            str(tmp_path / "g"),
            "--no-save",
            "--dtype",
            "float32",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    result = json.loads((tmp_path / "g" / "result.json").read_text())
    assert len(result["steps"]) == 2
    assert all(s["edit"].endswith(":mp-threshold(gavish-donoho)") for s in result["steps"])
