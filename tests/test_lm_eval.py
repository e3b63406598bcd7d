"""lm-evaluation-harness tasks (``--task lm-eval:...``) against lm-eval's own run.

Local-data YAML tasks of each output type (multiple_choice, loglikelihood, generate_until,
loglikelihood_rolling), and a group of two, written here with their data in local JSON files,
are scored by laserkit (through its evaluate(), its scorer and its split) and by
``lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer))``: the per-document
responses (log-likelihoods to float tolerance, generations exactly) and every metric must agree,
on the real default model and on a tiny random one. The CLI rows run the installed command."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_tiny

from laserkit.eval.evaluate import evaluate, split_examples
from laserkit.tasks import get_task
from laserkit.tasks.sources import load_examples

pytestmark = pytest.mark.usefixtures("one_thread")
LASERKIT = str(Path(sys.executable).with_name("laserkit"))

MC = [
    {"question": q, "choices": c, "answer": a}
    for q, c, a in [
        ("The capital of France is", [" Paris", " Rome", " Berlin"], 0),
        ("Two plus two equals", [" three", " four", " five"], 1),
        ("The sky on a clear day is", [" green", " blue", " red"], 1),
        ("Water freezes at zero degrees", [" Celsius", " Kelvin"], 0),
        ("The opposite of hot is", [" cold", " warm", " loud"], 0),
        ("A week has seven", [" days", " hours"], 0),
    ]
]
LL = [
    {"context": c, "ending": e}
    for c, e in [
        ("The cat sat on the", " mat"),
        ("Once upon a", " time"),
        ("Thank you very", " much"),
        ("Good morning, how are", " you"),
        ("One, two,", " three"),
    ]
]
GEN = [
    {"question": q, "answer": a}
    for q, a in [
        ("What is the capital of Italy?", "Rome"),
        ("What color is grass?", "green"),
        ("How many legs does a dog have?", "four"),
        ("What is 1 + 1?", "2"),
    ]
]
ROLL = [
    {"text": t}
    for t in [
        "The quick brown fox jumps over the lazy dog.",
        "It was the best of times, it was the worst of times.",
        "To be, or not to be, that is the question.",
    ]
]


def _yaml(name: str, data: Path, body: str) -> str:
    return (
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\n{body}"
    )


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """Five lm-eval YAML tasks (one per output type, and a group) with local JSON data."""
    d = tmp_path_factory.mktemp("lm-eval-tasks")
    bodies = {
        "lk_mc": (
            MC,
            "output_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
            "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\n"
            "metric_list:\n  - metric: acc\n  - metric: acc_norm\n",
        ),
        "lk_ll": (
            LL,
            "output_type: loglikelihood\ndoc_to_text: '{{context}}'\n"
            "doc_to_target: '{{ending}}'\nmetric_list:\n  - metric: acc\n"
            "  - metric: perplexity\n",
        ),
        "lk_gen": (
            GEN,
            "output_type: generate_until\ndoc_to_text: 'Q: {{question}}\\nA:'\n"
            "doc_to_target: '{{answer}}'\ngeneration_kwargs:\n  until: ['\\n']\n"
            "  max_gen_toks: 6\n  do_sample: false\nmetric_list:\n"
            "  - metric: exact_match\n",
        ),
        "lk_roll": (
            ROLL,
            "output_type: loglikelihood_rolling\ndoc_to_text: ''\n"
            "doc_to_target: '{{text}}'\nmetric_list:\n  - metric: word_perplexity\n"
            "  - metric: byte_perplexity\n  - metric: bits_per_byte\n",
        ),
    }
    for name, (rows, body) in bodies.items():
        data = d / f"{name}.json"
        data.write_text(json.dumps(rows))
        (d / f"{name}.yaml").write_text(_yaml(name, data, body))
    (d / "lk_group.yaml").write_text(
        "group: lk_group\ntask: [lk_mc, lk_ll]\naggregate_metric_list:\n"
        "  - metric: acc\n    weight_by_size: true\n"
    )
    return d


def _reference(model, tokenizer, names: list[str], include: Path) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    return simple_evaluate(
        model=lm, tasks=names, task_manager=TaskManager(include_path=str(include)), log_samples=True
    )


def _close(a, b, where: str) -> None:
    """Equal structures; floats to 1e-4 relative (batching changes rounding only)."""
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(float(a), float(b), rel_tol=1e-4, abs_tol=1e-4), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _check_equal(model, tokenizer, task_dir: Path, spec: str, names: list[str]) -> None:
    ours = evaluate(model, tokenizer, get_task(spec, str(task_dir)), progress=False, batch_size=3)
    ref = _reference(model, tokenizer, names, task_dir)
    by_id = {r["id"]: r for r in ours.records}
    n_docs = 0
    for task, logged in ref["samples"].items():
        for s in logged:
            rec = by_id[f"{task}:{s['doc_id']}"]
            _close(rec["resps"], json.loads(json.dumps(s["resps"])), f"{task}:{s['doc_id']}")
            for m in s["metrics"]:
                key = m if s["filter"] == "none" else f"{m},{s['filter']}"
                _close(rec[key], json.loads(json.dumps(s[m])), f"{task}:{s['doc_id']} {key}")
            n_docs += 1
    assert n_docs == len(ours.records)
    mine = ours.summary["lm_eval"]["results"]
    for task, metrics in ref["results"].items():
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                _close(mine[task][key], value, f"{task} {key}")


# a comma list averages tasks whose metrics point the same way: perplexity on its own
SPECS = [
    ("lm-eval:lk_mc,lk_ll,lk_gen", ["lk_mc", "lk_ll", "lk_gen"]),
    ("lm-eval:lk_roll", ["lk_roll"]),
    ("lm-eval:lk_group", ["lk_group"]),
]


@pytest.mark.parametrize(("spec", "names"), SPECS, ids=[s for s, _ in SPECS])
def test_equals_lm_eval_on_a_tiny_model(task_dir, default_model_dir, spec, names):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    model = make_tiny("llama", vocab_size=len(tok), num_hidden_layers=2)
    _check_equal(model, tok, task_dir, spec, names)


@pytest.mark.slow
def test_equals_lm_eval_on_the_default_model(task_dir, default_loaded):
    for spec, names in SPECS[:2]:
        _check_equal(default_loaded.model, default_loaded.tokenizer, task_dir, spec, names)


def test_split_keeps_every_task_in_validation(task_dir):
    """Tasks are interleaved by position: validation holds the first docs of each."""
    task = get_task("lm-eval:lk_mc,lk_ll,lk_gen", str(task_dir))
    val = split_examples(load_examples(task), "validation")
    assert {ex.id.split(":")[0] for ex in val} == {"lk_mc", "lk_ll", "lk_gen"}
    test = split_examples(load_examples(task), "test")
    assert not {e.id for e in val} & {e.id for e in test}
    assert len(val) + len(test) == len(MC) + len(LL) + len(GEN)


def _cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LASERKIT, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def test_unknown_task_is_one_line(task_dir):
    done = _cli("eval", "default", "--task", "lm-eval:no_such_task", "--include-path", task_dir)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("laserkit: error: ")
    assert "no_such_task" in done.stderr and "--include-path" in done.stderr


def test_mixed_directions_are_refused(task_dir):
    done = _cli("eval", "default", "--task", "lm-eval:lk_mc,lk_roll", "--include-path", task_dir)
    assert done.returncode == 2 and "disagree on whether higher is better" in done.stderr


def test_unreachable_data_names_the_dataset(tmp_path):
    (tmp_path / "gone.yaml").write_text(
        _yaml(
            "gone",
            tmp_path / "missing.json",
            "output_type: loglikelihood\ndoc_to_text: '{{a}}'\ndoc_to_target: '{{b}}'\n",
        )
    )
    done = _cli(
        "eval",
        "default",
        "--task",
        "lm-eval:gone",
        "--include-path",
        tmp_path,
        env={"HF_DATASETS_OFFLINE": "1"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("laserkit: error: ")
    assert "dataset_path json" in done.stderr and "local copy" in done.stderr


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, default_model_dir) -> Path:
    """A 2-layer llama with SmolLM2's tokenizer, saved as an HF directory."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    path = tmp_path_factory.mktemp("tiny-lm-eval")
    make_tiny("llama", vocab_size=len(tok), num_hidden_layers=2).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_eval_writes_lm_eval_results_json(task_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "ev"
    done = _cli(
        "eval",
        tiny_model_dir,
        "--task",
        "lm-eval:lk_mc",
        "--include-path",
        task_dir,
        "--out",
        out,
        "--dtype",
        "float32",
        "--device",
        "cpu",
    )
    assert done.returncode == 0, done.stderr
    res = json.loads((out / "lm_eval_results.json").read_text())
    assert {
        "results",
        "configs",
        "versions",
        "n-shot",
        "higher_is_better",
        "n-samples",
        "config",
        "date",
    } <= set(res)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "acc" and summary["n"] == len(MC)
    assert summary["score"] == res["results"]["lk_mc"]["acc,none"]
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(f"lk_mc:{i}" for i in range(len(MC)))
    assert all(len(r["resps"]) == len(MC[r["doc_id"]]["choices"]) for r in records)


def test_search_on_an_lm_eval_task(task_dir, tiny_model_dir, tmp_path):
    """search through the same task kind: base and best on test, with the paired statistics."""
    run = tmp_path / "run"
    done = _cli(
        "search",
        tiny_model_dir,
        "--task",
        "lm-eval:lk_mc,lk_ll",
        "--include-path",
        task_dir,
        "--lname",
        "fc_in",
        "--lnum",
        "-1:",
        "--rho",
        "0.5,0.1",
        "--run-dir",
        run,
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--no-save",
        "--final-eval",
        "lm-eval:lk_mc,lk_roll",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((run / "result.json").read_text())
    assert result["base"]["test"]["metric"] == "mean_acc"
    assert result["base"]["test"]["n"] + result["base"]["validation"]["n"] == len(MC) + len(LL)
    assert "ci95" in result["significance"]["test"], result["significance"]
    final = result["final_eval"]
    assert set(final) == {"lm-eval:lk_mc", "lm-eval:lk_roll"}
    mc = final["lm-eval:lk_mc"]
    assert mc["n"] == len(MC) and mc["metric"] == "acc"
    assert mc["diff"] == pytest.approx(mc["chosen"] - mc["base"])
    assert mc["ci95"][0] <= mc["diff"] <= mc["ci95"][1]
    assert mc["base_ci95"][0] <= mc["base"] <= mc["base_ci95"][1]
    assert "unavailable" in final["lm-eval:lk_roll"]["paired"]  # a corpus metric
    assert "Other tasks" in (run / "report" / "report.md").read_text()
    again = _cli(
        "search",
        tiny_model_dir,
        "--task",
        "lm-eval:lk_mc,lk_ll",
        "--include-path",
        task_dir,
        "--lname",
        "fc_in",
        "--lnum",
        "-1:",
        "--rho",
        "0.5,0.1",
        "--run-dir",
        run,
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--no-save",
        "--resume",
    )
    assert again.returncode == 0, again.stderr
    resumed = json.loads((run / "result.json").read_text())
    assert resumed["trials"] == result["trials"] and resumed["chosen"] == result["chosen"]


def test_final_eval_fails_before_the_search(task_dir, tiny_model_dir, tmp_path):
    done = _cli(
        "search",
        tiny_model_dir,
        "--task",
        "lm-eval:lk_mc",
        "--include-path",
        task_dir,
        "--final-eval",
        "lm-eval:nope",
        "--run-dir",
        tmp_path / "r",
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "nope" in done.stderr and not (tmp_path / "r").exists()


def test_include_path_needs_an_lm_eval_task(task_dir):
    done = _cli("eval", "default", "--task", "fever", "--include-path", task_dir)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--include-path applies to lm-eval tasks" in done.stderr


def test_eval_compare_pairs_lm_eval_documents(task_dir, tiny_model_dir, default_model_dir):
    done = _cli(
        "eval",
        tiny_model_dir,
        "--task",
        "lm-eval:lk_mc",
        "--include-path",
        task_dir,
        "--compare",
        tiny_model_dir,
        "--dtype",
        "float32",
        "--device",
        "cpu",
    )
    assert done.returncode == 0, done.stderr
    assert "+0.0000" in done.stdout and f"same {len(MC)} examples" in done.stdout
    done = _cli(
        "eval",
        tiny_model_dir,
        "--task",
        "lm-eval:lk_roll",
        "--include-path",
        task_dir,
        "--compare",
        tiny_model_dir,
        "--dtype",
        "float32",
        "--device",
        "cpu",
    )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]  # after lm-eval's own log lines
    assert last.startswith("laserkit: error: ") and "word_perplexity" in last
    assert "Traceback" not in done.stderr
