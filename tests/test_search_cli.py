"""The commands end to end on a tiny model that carries the default model's tokenizer: search
saves a model that reloads and writes the report; apply rebuilds the same model; greedy and
compose run on a shipped task; errors are one line."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny
from typer.testing import CliRunner

from laserkit.cli import _register, app
from laserkit.io.load import load

_register()
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, default_model_dir):
    """A 4-layer llama with SmolLM2's vocabulary and tokenizer, saved as an HF directory."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    model = make_tiny("llama", vocab_size=len(tok), num_hidden_layers=4)
    path = tmp_path_factory.mktemp("tiny-smol")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_search_saves_a_reloadable_model_and_a_report(tmp_path, tiny_dir):
    run = tmp_path / "run"
    invoke(
        "search",
        tiny_dir,
        "--task",
        "fever-bigbench",
        "--limit",
        "10",
        "--lnum",
        "-2:",
        "--rho",
        "0.5,0.1",
        "--run-dir",
        run,
        "--dtype",
        "float32",
        "--device",
        "cpu",
    )
    result = json.loads((run / "result.json").read_text())
    assert len(result["trials"]) == 8
    assert result["base"]["test"]["n"] == 8 and result["base"]["validation"]["n"] == 2
    sig = result["significance"]
    diff = result["best"]["test"]["accuracy"] - result["base"]["test"]["accuracy"]
    assert sig["test"]["n"] == 8 and sig["test"]["diff"] == pytest.approx(diff)
    m = sig["test"]["mcnemar"]
    assert (m["only_other"] - m["only_base"]) / 8 == pytest.approx(diff)
    assert sig["test"]["ci95"][0] <= diff <= sig["test"]["ci95"][1]
    assert sig["selection"]["n_trials"] == 8 and sig["selection"]["n"] == 2
    assert "not significant" in sig["test"]["verdict"]  # 8 test claims cannot show anything
    assert "Is the improvement real?" in (run / "report" / "report.md").read_text()
    assert {p.name for p in (run / "report").glob("*.png")} == {
        "heatmap_fc_in.png",
        "heatmap_fc_out.png",
        "versus_rho.png",
    }

    saved = load(run / "best-model", dtype="float32", device="cpu")
    record = json.loads((run / "best-model" / "laserkit.json").read_text())
    assert [(r["lname"], r["layer"]) for r in record["interventions"]] == [
        (e["lname"], e["layer"]) for e in result["chosen"]["edits"]
    ]

    invoke("apply", run, "--out", tmp_path / "again", "--dtype", "float32", "--device", "cpu")
    again = load(tmp_path / "again", dtype="float32", device="cpu")
    for a, b in zip(saved.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)

    resumed = runner.invoke(
        app,
        [
            "search",
            str(tiny_dir),
            "--task",
            "fever-bigbench",
            "--limit",
            "10",
            "--lnum",
            "-2:",
            "--rho",
            "0.5",
            "--run-dir",
            str(run),
            "--resume",
            "--dtype",
            "float32",
            "--no-save",
        ],
    )
    assert resumed.exit_code != 0 and "differs from run 'run' in rhos" in str(resumed.exception)


def test_compose_and_greedy_commands(tmp_path, tiny_dir):
    invoke(
        "compose",
        tiny_dir,
        "--task",
        "fever-bigbench",
        "--limit",
        "10",
        "--lnum",
        "-2:",
        "--lname",
        "fc_in",
        "--rho",
        "0.1",
        "--run-dir",
        tmp_path / "c",
        "--no-save",
        "--dtype",
        "float32",
        "--device",
        "cpu",
    )
    steps = json.loads((tmp_path / "c" / "result.json").read_text())["steps"]
    assert steps and steps[0]["layer"] == 3
    invoke(
        "greedy",
        tiny_dir,
        "--task",
        "fever-bigbench",
        "--limit",
        "10",
        "--candidates",
        "3",
        "--run-dir",
        tmp_path / "g",
        "--no-save",
        "--dtype",
        "float32",
        "--device",
        "cpu",
    )
    result = json.loads((tmp_path / "g" / "result.json").read_text())
    assert len(result["steps"]) == 3
    assert all(e["intervention"]["kind"] == "mp-threshold" for e in result["chosen"]["edits"])
    assert (tmp_path / "g" / "report" / "steps.png").exists()
