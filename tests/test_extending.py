"""Every extension point is a core.registry.Registry that another package fills through its
entry-point group ``laserkit.<group>`` (docs/extending.md): one test per registry, with
``importlib.metadata.entry_points`` replaced by one that names an object of this file, as an
installed package's metadata would. Each checks the plugged entry is listed after the shipped
ones, named by the one-line error for an unknown name, and used where laserkit uses the shipped
ones, against an independent computation."""

from __future__ import annotations

import dataclasses
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny

from laserkit import Editor, Intervention, LaserkitError
from laserkit.core import registry as R
from laserkit.interventions import KINDS, option
from laserkit.interventions.rank_reduction import SVD_METHODS, SvdMethod, rank_reduce
from laserkit.search.compare import METHODS, Method, parse_methods
from laserkit.search.strategy import STRATEGIES, make_strategy, names
from laserkit.spectral.mp import ESTIMATORS, mp_threshold
from laserkit.tasks import get_task
from laserkit.tasks.formats import READERS
from laserkit.tasks.sources import load_examples
from laserkit.tasks.spec import Example


@pytest.fixture
def plug(monkeypatch):
    """``plug(registry, name, "module:attr")``: the registry reads that entry point as if an
    installed package declared it; the registry's entries are restored after the test."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    declared: dict[str, list[EntryPoint]] = {}
    monkeypatch.setattr(R, "entry_points", lambda group: declared.get(group, []))

    def add(reg: R.Registry, name: str, value: str) -> None:
        group = f"laserkit.{reg.group}"
        declared.setdefault(group, []).append(EntryPoint(name, value, group))
        monkeypatch.setattr(reg, "_entries", dict(reg._entries))
        monkeypatch.setattr(reg, "_plugins_read", False)

    return add


# -- objects a third-party package would ship -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scale(Intervention):
    """multiply the matrix by a factor (a plugged kind)"""

    factor: float = option(0.5, "--factor", "what W is multiplied by")

    def compute(self, W, factors=None):
        return W * self.factor, {"rank": min(W.shape)}


class FirstEditOnly:
    """A strategy that tries the first edit of the grid and stops (a plugged strategy)."""

    def __init__(self, cfg, higher_is_better=True, split="validation"):
        self.cfg = cfg


SVD_FULL_ITERATIONS = Method("svd-again", "grid", {"kind": "rank-reduction"}, "LASER once more")
UNCACHED_EXACT = SvdMethod("the exact truncation, decomposed each time", None, rank_reduce)


def half_of_largest(s: torch.Tensor, m: int, n: int) -> float:
    """τ = max(s) / 2 (a plugged noise estimator)."""
    return float(s.max()) / 2


def read_shouted(records, spec, kind, meta, origin):
    """Records {q, a}: the question in capitals after the spec's prompt (a plugged reader)."""
    return [
        Example(str(i), (spec.prompt or "") + r["q"].upper(), answers=(r["a"],))
        for i, r in enumerate(records)
    ]


# -- one test per registry ---------------------------------------------------------------------


def test_an_intervention_kind_from_an_entry_point(plug):
    plug(KINDS, "scale", "test_extending:Scale")
    assert KINDS.names()[-1] == "scale"
    iv = Intervention(kind="scale", factor=0.25)
    assert type(iv) is Scale and iv.kind == "scale" and iv.describe() == "scale(factor=0.25)"
    assert Scale.summary == "multiply the matrix by a factor (a plugged kind)"
    assert Intervention.from_dict(iv.to_dict()) == iv
    with pytest.raises(LaserkitError, match=r"^unknown intervention 'nope': use one of .*, scale$"):
        Intervention(kind="nope")
    from laserkit.cli.options import collect

    assert "--factor" in {o.flag for o in collect(KINDS.names())}
    model = make_tiny("llama", num_hidden_layers=2)
    (target,) = Editor(model).targets("fc_in", 1)
    before = model.state_dict()[target.param].clone()
    Editor(model).apply("fc_in", 1, iv)
    assert torch.equal(model.state_dict()[target.param], before * 0.25)


def test_a_search_strategy_from_an_entry_point(plug):
    from test_search import grid_cfg

    plug(STRATEGIES, "first-edit", "test_extending:FirstEditOnly")
    assert "first-edit" in names() and names() == sorted(names())
    cfg = grid_cfg(make_tiny("llama"), strategy="first-edit")
    plan = make_strategy(cfg)
    assert type(plan) is FirstEditOnly and plan.cfg is cfg
    with pytest.raises(LaserkitError, match=r"^unknown strategy 'nope': use one of .*first-edit$"):
        make_strategy(dataclasses.replace(cfg, strategy="nope"))


def test_a_compare_method_from_an_entry_point(plug):
    plug(METHODS, "svd-again", "test_extending:SVD_FULL_ITERATIONS")
    assert parse_methods("svd,svd-again") == ["svd", "svd-again"]
    assert parse_methods("all")[-1] == "svd-again"
    with pytest.raises(LaserkitError, match=r"unknown method nope in --methods: .*svd-again \(or"):
        parse_methods("nope")


def test_an_svd_method_from_an_entry_point(plug):
    plug(SVD_METHODS, "exact-uncached", "test_extending:UNCACHED_EXACT")
    iv = Intervention(rho=0.25, svd_method="exact-uncached")
    assert iv.factor_dtype(torch.float32) is None  # nothing cached for it
    W = torch.randn(24, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out, rec = iv.compute(W)
    U, S, Vt = np.linalg.svd(W.numpy(), full_matrices=False)
    assert rec["rank"] == 4
    np.testing.assert_allclose(out.numpy(), (U[:, :4] * S[:4]) @ Vt[:4], atol=1e-10)
    with pytest.raises(
        LaserkitError, match=r"^unknown --svd 'nope': use one of .*lowrank-niter2, exact-uncached$"
    ):
        Intervention(rho=0.25, svd_method="nope")


def test_a_noise_estimator_from_an_entry_point(plug):
    plug(ESTIMATORS, "half-max", "test_extending:half_of_largest")
    s = torch.tensor([4.0, 3.0, 1.5, 1.0], dtype=torch.float64)
    assert mp_threshold(s, 8, 4, "half-max") == 2.0
    iv = Intervention(kind="mp-threshold", estimator="half-max")
    W = torch.randn(12, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out, rec = iv.compute(W)
    U, S, Vt = np.linalg.svd(W.numpy(), full_matrices=False)
    k = int((S > S.max() / 2).sum())  # laserRMT keeps the singular values above τ
    assert rec["rank"] == k
    np.testing.assert_allclose(out.numpy(), (U[:, :k] * S[:k]) @ Vt[:k], atol=1e-10)
    with pytest.raises(LaserkitError, match=r"^unknown noise estimator 'x': .*, half-max$"):
        mp_threshold(s, 8, 4, "x")


def test_a_data_reader_from_an_entry_point(plug, tmp_path):
    plug(READERS, "shouted", "test_extending:read_shouted")
    (tmp_path / "r.jsonl").write_text('{"q": "who?", "a": "me"}\n{"q": "why?", "a": "so"}\n')
    (tmp_path / "t.yaml").write_text(
        "kind: generate\ndata: r.jsonl\nreader: shouted\nprompt: 'Q: '\n"
    )
    examples = load_examples(get_task(str(tmp_path / "t.yaml")))
    assert [(e.id, e.prompt, e.answers) for e in examples] == [
        ("0", "Q: WHO?", ("me",)),
        ("1", "Q: WHY?", ("so",)),
    ]
    (tmp_path / "u.yaml").write_text("kind: generate\ndata: r.jsonl\nreader: shoutd\n")
    with pytest.raises(LaserkitError, match=r"unknown reader 'shoutd'; use one of .*, shouted, or"):
        get_task(str(tmp_path / "u.yaml"))


def test_help_lists_the_registries_names():
    """--help names every kind (built from KINDS at start-up), every compare method and the
    strategies `search` offers; the last two are written out because importing the search
    package to list them would cost seconds on every start-up: this keeps them in step."""
    import os
    import shutil
    import subprocess
    import sys

    exe = Path(sys.prefix) / "bin" / "laserkit"
    cmd = str(exe) if exe.exists() else shutil.which("laserkit")
    env = {**os.environ, "COLUMNS": "250", "HF_HUB_OFFLINE": "1"}

    def help_of(*args: str) -> str:
        out = subprocess.run([cmd, *args, "--help"], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        return " ".join(out.stdout.split())

    reduce_help = help_of("reduce")
    assert all(k in reduce_help for k in KINDS.names())
    compare_help = help_of("compare")
    assert all(m in compare_help for m in METHODS.names())
    search_help = help_of("search")
    assert {"grid", "tpe"} <= set(STRATEGIES.names()) and "tpe:" in search_help
