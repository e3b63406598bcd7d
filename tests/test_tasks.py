"""Tasks as data: the built-in definitions, the packaged BIG-bench data, local files in the
original release formats, user task files, splits, and one-line errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_tiny

from laserkit.core.errors import LaserkitError
from laserkit.eval.evaluate import EvalResult, evaluate, split_examples
from laserkit.tasks import get_task, list_tasks
from laserkit.tasks import sources as src
from laserkit.tasks.registry import Example
from laserkit.tasks.sources import load_examples

PAPER = {
    "counterfact",
    "hotpotqa",
    "fever",
    "bios-gender",
    "bios-profession",
    "truthfulqa",
    "bbh-epistemic",
    "bbh-wikidata",
}
PACKAGED = {
    "fever-bigbench": 6612,
    "truthfulqa-mc": 299,
    "bbh-epistemic-bigbench": 2000,
    "bbh-wikidata-bigbench": 20442,
    "dpo-semantic-bigbench": 221,
    "truthfulqa-bigbench": None,
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Tests never reach the hub; the offline path must be taken quickly and the same way."""
    monkeypatch.setattr(src, "hub_reachable", lambda timeout=3.0: False)


def _well_formed(task, ex: Example) -> None:
    assert ex.id
    if task.kind == "choice":
        assert len(ex.choices) >= 2 and ex.gold and all(0 <= g < len(ex.choices) for g in ex.gold)
    elif task.kind in ("generate", "next_token"):
        assert ex.answers and all(a.strip() for a in ex.answers)
    elif task.kind == "semantic":
        assert ex.chosen.strip() and ex.rejected.strip() and ex.chosen != ex.rejected
    if task.kind != "perplexity":
        assert ex.prompt.strip() and "{" not in ex.prompt[:1]


def test_registry_has_the_paper_tasks_and_laser_rmt_scores():
    names = {t.name for t in list_tasks()}
    assert PAPER | {"perplexity", "dpo-semantic", "dpo-semantic-bigbench", "truthfulqa-mc"} <= names
    assert get_task("epistemic-reasoning").name == "bbh-epistemic"  # alias
    assert get_task("perplexity").higher_is_better is False
    assert get_task("dpo-semantic").metric == "semantic_score"
    for t in list_tasks():
        assert t.where() and t.description
    with pytest.raises(LaserkitError, match="unknown task 'nope'.*fever"):
        get_task("nope")


@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_packaged_tasks_load_offline_and_are_well_formed(name):
    task = get_task(name)
    exs = load_examples(task)
    if PACKAGED[name] is not None:
        assert len(exs) == PACKAGED[name]
    assert len({e.id for e in exs}) == len(exs)
    for ex in exs[:50] + exs[-50:]:
        _well_formed(task, ex)


def test_packaged_contents():
    fever = load_examples(get_task("fever-bigbench"))
    assert fever[0].choices == ("true", "false") and fever[0].prompt.endswith("\nA:")
    epi = load_examples(get_task("bbh-epistemic-bigbench"))[0]
    assert epi.prompt.startswith("Identify the relation") and epi.prompt.endswith("Relation:")
    assert epi.choices[epi.gold[0]] == "non-entailment"
    wiki = load_examples(get_task("bbh-wikidata-bigbench"))[0]
    assert wiki.answers == ("comedy", "parody")
    tqa = load_examples(get_task("truthfulqa-bigbench"))
    assert {e.choices for e in tqa} == {("true", "false")}
    assert 0 < sum(e.gold == (0,) for e in tqa) < len(tqa)  # both true and false statements
    mc = load_examples(get_task("truthfulqa-mc"))[0]
    assert mc.prompt.startswith("Q: What is human life expectancy") and len(mc.gold) == 1


def test_canary_and_license_ship_with_the_data():
    folder = src.PACKAGED
    assert "Apache License 2.0" in (folder / "README.md").read_text()
    for f in folder.glob("*.json"):
        assert "canary GUID 26b5c67b" in json.loads(f.read_text())["canary"]


@pytest.mark.parametrize(
    "name",
    [
        "counterfact",
        "hotpotqa",
        "bios-gender",
        "bios-profession",
        "perplexity",
        "fever",
        "truthfulqa",
        "bbh-epistemic",
        "bbh-wikidata",
    ],
)
def test_tasks_without_packaged_data_say_where_to_get_it(name):
    task = get_task(name)
    with pytest.raises(LaserkitError) as e:
        load_examples(task)
    msg = str(e.value)
    assert "\n" not in msg and "--data" in msg and task.url.split()[0] in msg
    with pytest.raises(LaserkitError, match="not reachable"):
        load_examples(get_task("fever", data="hub"))


def _write(path, records):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(records[0]))
            w.writeheader()
            w.writerows(records)
    else:
        path.write_text(json.dumps(records))
    return path


def test_original_release_formats(tmp_path):
    cf = [
        {
            "case_id": 7,
            "requested_rewrite": {
                "prompt": "The mother tongue of {} is",
                "subject": "Danielle Darrieux",
                "target_new": {"str": "English"},
                "target_true": {"str": "French"},
            },
            "paraphrase_prompts": ["Shayna does this. Danielle Darrieux speaks"],
        }
    ]
    exs = load_examples(get_task("counterfact", _write(tmp_path / "counterfact.json", cf)))
    assert [(e.id, e.prompt, e.answers) for e in exs] == [
        ("7", "The mother tongue of Danielle Darrieux is", ("French",)),
        ("7-p1", "Shayna does this. Danielle Darrieux speaks", ("French",)),
    ]

    fever = [
        {"id": 1, "label": "SUPPORTS", "claim": "A is B."},
        {"id": 2, "label": "NOT ENOUGH INFO", "claim": "C."},
        {"id": 3, "label": "REFUTES", "claim": "D is E."},
    ]
    exs = load_examples(get_task("fever", _write(tmp_path / "paper_dev.jsonl", fever)))
    assert [(e.id, e.gold) for e in exs] == [("1", (0,)), ("3", (1,))]  # NEI skipped
    assert "A is B." in exs[0].prompt

    hotpot = [{"_id": "5a8b", "question": "Who?", "answer": "Ann", "context": []}]
    ex = load_examples(get_task("hotpotqa", _write(tmp_path / "hotpot_dev.json", hotpot)))[0]
    assert (ex.id, ex.prompt, ex.answers) == ("5a8b", "Who? The answer is", ("Ann",))

    bios = [
        {"hard_text": "She is a poet.", "profession": 20, "gender": 1},
        {"hard_text": "He codes.", "profession": 24, "gender": 0},
    ]
    path = _write(tmp_path / "bios.jsonl", bios)
    assert [e.gold for e in load_examples(get_task("bios-gender", path))] == [(1,), (0,)]
    prof = load_examples(get_task("bios-profession", path))  # software engineer is not one of 8
    assert len(prof) == 1 and prof[0].choices[prof[0].gold[0]] == "poet"
    release = [{"bio": "He paints.", "title": "painter", "gender": "M"}]  # the BIOS release
    ex = load_examples(get_task("bios-profession", _write(tmp_path / "b.json", release)))[0]
    assert ex.choices[ex.gold[0]] == "painter" and "text: He paints. What is" in ex.prompt

    tqa = [
        {
            "Type": "Adversarial",
            "Question": "Q1?",
            "Best Answer": "a",
            "Correct Answers": "a; b",
            "Incorrect Answers": "c",
        }
    ]
    path = _write(tmp_path / "TruthfulQA.csv", tqa)
    assert [e.gold for e in load_examples(get_task("truthfulqa-bigbench", path))] == [
        (0,),
        (0,),
        (1,),
    ]
    mc = load_examples(get_task("truthfulqa-mc", path))[0]
    assert mc.choices == ("a", "b", "c") and mc.gold == (0, 1)

    (tmp_path / "notes.txt").write_text("Some text to score.")
    assert load_examples(get_task("perplexity", tmp_path / "notes.txt"))[0].text.startswith("Some")


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_user_task_file_round_trip(tmp_path, default_model_dir, suffix):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    model = make_tiny("llama", vocab_size=49152, num_hidden_layers=1)
    rows = [
        {
            "qid": f"q{i}",
            "question": f"Is {i} even?",
            "options": json.dumps(["yes", "no"]),
            "label": "yes" if i % 2 == 0 else "no",
        }
        for i in range(6)
    ]
    data = _write(tmp_path / f"data{suffix}", rows)
    decl = tmp_path / "my_task.yaml"
    decl.write_text(
        f'kind: choice\ndata: {data.name}\nprompt: "Q: {{question}}\\nA:"\n'
        "id: qid\nchoices_field: options\nanswer: label\n"
    )
    task = get_task(str(decl))
    assert task.name == "my_task" and task.kind == "choice"
    exs = load_examples(task)
    assert [e.id for e in exs] == [r["qid"] for r in rows]
    assert exs[1].prompt == "Q: Is 1 even?\nA:" and exs[1].choices == ("yes", "no")
    assert exs[1].gold == (1,)
    res = evaluate(model, tok, task, split="test", progress=False, batch_size=4)
    assert [r["id"] for r in res.records] == ["q1", "q2", "q3", "q4", "q5"]  # int(0.2·6) = 1
    out = res.write(tmp_path / "out")
    back = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert back == json.loads(json.dumps(res.records))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "my_task" and summary["n"] == 5 and summary["split"] == "test"
    assert isinstance(EvalResult(summary, back), EvalResult)


def test_bare_data_files_and_json_declarations(tmp_path):
    open_answers = _write(
        tmp_path / "qa.jsonl",
        [{"prompt": "2+2=", "answer": "4"}, {"prompt": "Sky color:", "answer": ["blue"]}],
    )
    task = get_task(str(open_answers))
    assert task.kind == "generate" and load_examples(task)[1].answers == ("blue",)
    mc = _write(tmp_path / "mc.csv", [{"prompt": "p", "choices": "a|b|c", "answer": "2"}])
    ex = load_examples(get_task(str(mc)))[0]
    assert get_task(str(mc)).kind == "choice" and ex.choices == ("a", "b", "c") and ex.gold == (2,)
    decl = tmp_path / "t.json"
    decl.write_text(
        json.dumps(
            {
                "kind": "generate",
                "data": "qa.jsonl",
                "prompt": "{prompt}",
                "max_new_tokens": 3,
                "name": "arith",
            }
        )
    )
    task = get_task(str(decl))
    assert (task.name, task.max_new_tokens, len(load_examples(task))) == ("arith", 3, 2)


@pytest.mark.parametrize(
    "decl,records,match",
    [
        ("data: d.jsonl\nprompt: x", [{"answer": "a"}], "missing 'kind'"),
        ("kind: choice\nprompt: x", None, "missing 'data'"),
        (
            "kind: choice\ndata: d.jsonl\nprompt: x\nchoices: [a, b]\nansewr: a",
            [{"answer": "a"}],
            r"unknown key 'ansewr'; accepted: name, kind, .*answer, ",
        ),
        ("kind: choice\ndata: nothere.jsonl\nprompt: x", None, "does not exist"),
        (
            'kind: generate\ndata: d.jsonl\nprompt: "{question}"',
            [{"question": "q", "answer": "a"}, {"id": "r7", "answer": "b"}],
            r"d.jsonl record 1 \(id r7\): missing field 'question'",
        ),
        (
            'kind: generate\ndata: d.jsonl\nprompt: "{question}"',
            [{"question": "q"}],
            r"record 0: missing field 'answer'",
        ),
        (
            "kind: choice\ndata: d.jsonl\nprompt: x\nchoices: [a, b]",
            [{"answer": "c"}],
            r"record 0: answer 'c' is not one of the choices",
        ),
        (
            "kind: choice\ndata: d.jsonl\nprompt: x\nchoices: [a, '']",
            [{"answer": "a"}],
            "non-empty answer choices",
        ),
        ("kind: quiz\ndata: d.jsonl\nprompt: x", [{"answer": "a"}], "unknown kind 'quiz'"),
        ("kind: [unclosed", None, "not valid YAML"),
    ],
)
def test_bad_task_files_fail_in_one_line(tmp_path, decl, records, match):
    if records is not None:
        _write(tmp_path / "d.jsonl", records)
    path = tmp_path / "t.yaml"
    path.write_text(decl)
    with pytest.raises(LaserkitError, match=match) as e:
        load_examples(get_task(str(path)))
    assert "\n" not in str(e.value)


def test_malformed_data_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": oops}\n')
    with pytest.raises(LaserkitError, match="bad.jsonl line 2: invalid JSON"):
        load_examples(get_task(str(bad)))
    with pytest.raises(LaserkitError, match="does not exist"):
        get_task("fever", data=tmp_path / "missing.jsonl")
    cf = _write(tmp_path / "cf.json", [{"case_id": 3, "prompt": "no rewrite here"}])
    with pytest.raises(LaserkitError, match=r"cf.json record 0 \(id 3\): not a CounterFact"):
        load_examples(get_task("counterfact", cf))
    with pytest.raises(LaserkitError, match="unsupported data file type"):
        load_examples(get_task("fever", data=_write(tmp_path / "x.parquet", [])))


def test_split_examples_is_deterministic_and_disjoint():
    items = [Example(str(i), "p", ("a", "b"), (0,)) for i in range(11)]
    val, test = split_examples(items, "validation"), split_examples(items, "test")
    assert len(val) == int(0.2 * 11) == 2 and val + test == items
    assert split_examples(items, "all") == items
    s1 = split_examples(items, "validation", seed=4)
    assert s1 == split_examples(items, "validation", seed=4) and s1 != val
    assert set(map(id, s1)) | set(map(id, split_examples(items, "test", seed=4))) == set(
        map(id, items)
    )
    assert len(split_examples(items[:1], "validation")) == 1
    with pytest.raises(LaserkitError):
        split_examples(items, "train")


def test_cli_tasks_and_eval(tmp_path, default_model_dir):
    from transformers import AutoTokenizer
    from typer.testing import CliRunner

    from laserkit.cli import _register, app

    _register()
    runner = CliRunner()
    # the installed command, in its own process: an in-process console's width is whatever
    # COLUMNS was when an earlier test first imported the CLI (a different test under xdist)
    listed = subprocess.run(
        [str(Path(sys.prefix) / "bin" / "laserkit"), "tasks"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
        timeout=300,
    )
    assert listed.returncode == 0, listed.stderr
    for name in PAPER | {"perplexity", "dpo-semantic"}:
        assert name in listed.stdout
    model_dir = tmp_path / "tiny"
    make_tiny("llama", vocab_size=49152, num_hidden_layers=1).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(default_model_dir).save_pretrained(model_dir)
    data = _write(
        tmp_path / "qa.jsonl",
        [{"prompt": f"Q{i}:", "choices": ["a", "b"], "answer": "a"} for i in range(5)],
    )
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "eval",
            str(model_dir),
            "--task",
            str(data),
            "--split",
            "validation",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and "log_loss" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 1 and summary["split"] == "validation" and summary["task"] == "qa"
    assert len((out / "records.jsonl").read_text().splitlines()) == 1
    res = runner.invoke(app, ["eval", str(model_dir), "--task", "counterfact"])
    assert isinstance(res.exception, LaserkitError) and "counterfact.json" in str(res.exception)


def test_task_object_with_other_data_and_cached_examples(tmp_path):
    fever = [{"id": 1, "label": "SUPPORTS", "claim": "A is B."}]
    task = get_task("fever-bigbench")
    other = get_task(get_task("fever"), _write(tmp_path / "f.jsonl", fever))
    assert len(load_examples(other)) == 1 and len(load_examples(task)) == 6612
    assert load_examples(get_task("fever-bigbench")) == load_examples(
        task
    )  # parsed once, equal copies
