"""`laserkit reproduce TASK`: the paper's protocol in one command, through the installed
command, and what it says is (not) comparable with the paper's Table 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from laserkit.search.paper import PAPER_RATES, comparability

LASERKIT = str(Path(sys.executable).with_name("laserkit"))


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([LASERKIT, *argv], capture_output=True, text=True)


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["reproduce", "fever-bigbench"],
            "reproduce 'fever-bigbench': not one of the paper's tasks",
        ),
        (["reproduce", "wikitext"], "reproduce 'wikitext': not one of the paper's tasks"),
        (
            ["search", "default", "--task", "fever", "--selection", "paper"],
            "unknown --selection 'paper': use laserkit, reference",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path):
    done = subprocess.run([LASERKIT, *argv], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"laserkit: error: {message}")
    assert done.stderr.count("\n") == 1


def test_comparability_names_what_differs():
    gptj = ("gptj", 28, 4096)
    same, differ = comparability("fever", 13_086, gptj, "27-17")
    assert any("n = 13,086, the reference's 13,086" in x for x in same)
    assert any("svd_lowrank(q=k, niter=2)" in x for x in differ)
    assert not any("model:" in x or "layers:" in x or "fix 1" in x for x in differ)
    _, differ = comparability("hotpotqa", 9_000, gptj, "all", "9.9")
    text = " ".join(differ)
    assert "not the paper's data" in text and "fix 1" in text and "GPT-J: layers 27–17" in text
    assert "rates 9.9, not the paper's " + PAPER_RATES in text
    _, differ = comparability("counterfact", None, ("llama", 30, 576), "all")
    assert any("llama, 30 layers, width 576 is not one of the paper's" in x for x in differ)
    assert any("never straddles" in x for x in differ)


@pytest.mark.slow
def test_reproduce_runs_the_reference_protocol(tmp_path):
    recs = [
        {
            "inputs": f"Premise: Ann thinks box {i} is red. Hypothesis: Box {i} is red.\nRelation:",
            "targets": ["non-entailment" if i % 3 else "entailment"],
            "idx": i,
        }
        for i in range(5)
    ]
    data = tmp_path / "epi.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    done = _run(
        "reproduce",
        "bbh-epistemic",
        "default",
        "--data",
        str(data),
        "--lnum",
        "-1",
        "--rate",
        "9.9",
        "--no-save",
        "--batch-size",
        "5",
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert done.returncode == 0, done.stderr
    out = " ".join((done.stdout + done.stderr).split())
    assert "comparable with the paper's Table 1" in out and "svd_lowrank" in out
    assert "n = 5, the reference's 2,000 — not the paper's data" in out
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["chosen"]["edits"], "the reference's selection reports an intervention"
    from laserkit.search.where import open_run

    cfg = open_run(tmp_path / "run").config
    assert cfg.selection == "reference" and cfg.params.lnames == ["fc_in", "fc_out"]
    assert cfg.params.rhos == [(10 - 9.9) * 0.1] and cfg.objective.limit is None


def test_task_definitions_have_no_duplicate_keys():
    """paper.yaml had two `description:` keys under hotpotqa and bbh-wikidata (YAML keeps the
    last silently); a loader that refuses duplicates reads every definition file."""
    import yaml

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader, node):
        keys = [loader.construct_object(k) for k, _ in node.value]
        dup = {k for k in keys if keys.count(k) > 1}
        assert not dup, f"duplicate keys {dup} at line {node.start_mark.line + 1}"
        return loader.construct_mapping(node)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    folder = Path(__file__).parents[1] / "laserkit" / "tasks" / "definitions"
    files = sorted(folder.glob("*.yaml"))
    assert files
    for f in files:
        yaml.load(f.read_text(), Loader=Strict)
