"""Saving edited models (reload, record, atomicity) and loading errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny
from safetensors.torch import load_file

from laserkit import Editor, Intervention, LaserkitError, load, save
from laserkit.io.save import RECORD


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi3"])
def test_saved_model_reloads_with_the_same_logits(tmp_path, family):
    from transformers import AutoModelForCausalLM

    model = make_tiny(family)
    ed = Editor(model)
    ed.apply("fc_in", 1, Intervention(rho=0.1))
    ed.apply("q_proj", 0, Intervention(kind="mp-threshold"))
    out = save(model, None, tmp_path / "edited", ed.records, base=f"tiny-{family}")
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(3, 128, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    record = json.loads((out / RECORD).read_text())
    assert [(e["lname"], e["layer"], e["kind"]) for e in record["interventions"]] == [
        ("fc_in", 1, "rank-reduction"),
        ("q_proj", 0, "mp-threshold"),
    ]
    assert "fc_in" in (out / "README.md").read_text()


def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch):
    model = make_tiny("llama")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(model, "save_pretrained", broken)
    with pytest.raises(RuntimeError):
        save(model, None, tmp_path / "out", [], base="tiny")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_to_overwrite_without_force(tmp_path):
    model = make_tiny("llama")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(LaserkitError, match="exists and is not empty"):
        save(model, None, tmp_path / "out", [], base="tiny")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    save(model, None, tmp_path / "out", [], base="tiny", overwrite=True)
    assert not (tmp_path / "out" / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(LaserkitError, match="does not exist"):
        load(tmp_path / "nope.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LaserkitError, match="not a model directory"):
        load(tmp_path / "empty")
    with pytest.raises(LaserkitError, match="cannot load model 'someone/not-cached-model'") as e:
        load("someone/not-cached-model")
    assert "\n" not in str(e.value)
    with pytest.raises(LaserkitError, match="unknown dtype"):
        load("default", dtype="float8")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "laserkit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_errors_are_one_line_without_traceback(tmp_path, default_model_dir):
    for args, needle in [
        (
            ["reduce", str(default_model_dir), "--lname", "fc_mid", "--lnum", "1", "--rho", "0.1"],
            "unknown layer name 'fc_mid'",
        ),
        (
            ["reduce", str(default_model_dir), "--lname", "fc_in", "--lnum", "30", "--rho", "0.1"],
            "layer 30 is out of range: this model has layers 0..29",
        ),
        (
            ["reduce", str(default_model_dir), "--lname", "fc_in", "--lnum", "1", "--rate", "11"],
            "rate 11.0 is outside [0, 10]",
        ),
        (
            ["reduce", "nobody/nothing", "--lname", "fc_in", "--lnum", "1", "--rate", "9"],
            "cannot load model 'nobody/nothing'",
        ),
    ]:
        r = _cli(*args, cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert needle in r.stderr
        assert "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_real_model_reduce_last_fc_in_and_reload(tmp_path, default_model_dir):
    """SmolLM2: ρ = 0.01 on the last layer's fc_in; the saved model differs only there."""
    out = tmp_path / "reduced"
    r = _cli(
        "reduce",
        str(default_model_dir),
        "--lname",
        "fc_in",
        "--lnum",
        "-1",
        "--rate",
        "9.9",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    base = load_file(default_model_dir / "model.safetensors")
    new = load_file(out / "model.safetensors")
    assert set(base) == set(new)
    changed = [k for k in base if not torch.equal(base[k], new[k])]
    assert changed == ["model.layers.29.mlp.gate_proj.weight"]
    W = new["model.layers.29.mlp.gate_proj.weight"]
    assert W.shape == (1536, 576)
    assert torch.linalg.matrix_rank(W, rtol=1e-4) == 5  # ⌊576 · 0.01⌋, up to float32 rounding
    rec = json.loads((out / RECORD).read_text())["interventions"]
    assert rec[0]["module"] == "model.layers.29.mlp.gate_proj" and rec[0]["rank"] == 5
    loaded = load(out, device="cpu")
    assert loaded.tokenizer("hello")["input_ids"]
    assert torch.equal(loaded.model.model.layers[29].mlp.gate_proj.weight, W)


@pytest.mark.parametrize("fmt", ["sharded-safetensors", "bin"])
def test_load_local_directory(tmp_path, fmt):
    """Sharded safetensors, or a legacy pytorch_model.bin, without tokenizer files."""
    model = make_tiny("gpt_neox")
    if fmt == "bin":
        model.config.save_pretrained(tmp_path / "m")
        torch.save(model.state_dict(), tmp_path / "m" / "pytorch_model.bin")
    else:
        model.save_pretrained(tmp_path / "m", max_shard_size="20KB")
        assert (tmp_path / "m" / "model.safetensors.index.json").exists()
    loaded = load(tmp_path / "m", device="cpu")
    assert loaded.model.dtype == torch.float32
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
