"""Task kinds are classes behind one registry, answered by one scorer interface:

- A kind laserkit does not ship (tests/throwaway_task_kind.py) is one file: a task file names
  it, evaluate scores it (its numbers equal those of the same questions as a ``choice`` task),
  and the command line previews it.
- The shipped kinds answer for everything that differs between kinds (metrics, defaults,
  streaming, the prefix cache); unknown kinds are one line naming the declarable ones.
- Masked LMs are refused, in one line, the kinds whose requests they cannot answer.
- The validation rule is one function: a search's objective and evaluate split alike.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_tiny

from laserkit.core.errors import LaserkitError
from laserkit.eval.evaluate import evaluate, split_examples
from laserkit.search.objective import split_slice
from laserkit.tasks import get_task
from laserkit.tasks.kinds import KINDS, declarable, kind_of
from laserkit.tasks.registry import Example, Task
from laserkit.tasks.sources import load_examples

TESTS = Path(__file__).resolve().parent
QUESTIONS = [
    ("Is the sky blue?", "yes"),
    ("Is fire cold?", "no"),
    ("Is water wet?", "yes"),
    ("Is ice hot?", "no"),
    ("Do birds fly?", "yes"),
]


@pytest.fixture
def yes_no():
    """The throwaway kind, registered for one test and taken back (other tests list KINDS)."""
    sys.path.insert(0, str(TESTS))
    sys.modules.pop("throwaway_task_kind", None)
    module = importlib.import_module("throwaway_task_kind")
    yield module
    KINDS._entries.pop("yes-no", None)
    kind_of.cache_clear()
    sys.modules.pop("throwaway_task_kind", None)
    sys.path.remove(str(TESTS))


@pytest.fixture(scope="module")
def tok(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


def _task_file(tmp_path: Path) -> Path:
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    decl = tmp_path / "qa.yaml"
    decl.write_text("kind: yes-no\ndata: qa.jsonl\n")
    return decl


def test_a_kind_of_ones_own_is_one_file(tmp_path, yes_no, tok):
    task = get_task(str(_task_file(tmp_path)))
    assert (task.kind, task.metric, task.metrics(), task.higher_is_better) == (
        "yes-no",
        "accuracy",
        ("accuracy", "log_loss"),
        True,
    )
    assert "yes-no" in declarable()
    model = make_tiny("llama", vocab_size=len(tok), num_hidden_layers=2)
    got = evaluate(model, tok, task, progress=False)
    # the same questions as a shipped choice task: the same two continuations are scored
    as_choice = Task(name="qa", kind="choice")
    as_choice._examples = [
        Example(str(i), q, ("yes", "no"), (("yes", "no").index(a),))
        for i, (q, a) in enumerate(QUESTIONS)
    ]
    want = evaluate(model, tok, as_choice, progress=False)
    assert [r["correct"] for r in got.records] == [r["correct"] for r in want.records]
    assert [r["log_loss"] for r in got.records] == pytest.approx(
        [r["log_loss"] for r in want.records], abs=1e-9
    )
    assert got.summary["score"] == want.summary["accuracy"]
    assert (got.summary["kind"], got.summary["n"]) == ("yes-no", 5)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Is it?", "answer": "maybe"}) + "\n")
    (tmp_path / "bad.yaml").write_text("kind: yes-no\ndata: bad.jsonl\n")
    with pytest.raises(LaserkitError, match="the answer must be yes or no, not \\['maybe'\\]"):
        load_examples(get_task(str(tmp_path / "bad.yaml")))


def test_the_command_line_previews_a_kind_of_ones_own(tmp_path, default_model_dir):
    decl = _task_file(tmp_path)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    code = (
        "import sys, throwaway_task_kind; from laserkit.cli import run; sys.exit(run(sys.argv[1:]))"
    )
    args = ["eval", str(default_model_dir), "--task", str(decl), "--dry-run", "--show", "2"]
    res = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert "task qa: kind yes-no, metric accuracy (higher is better)" in res.stdout
    assert "Is fire cold?" in res.stdout and "answer:" in res.stdout and "\nno\n" in res.stdout
    # without the plugin the kind is unknown: one line naming the kinds a task file may use
    res = subprocess.run(
        [sys.executable, "-m", "laserkit", *args], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("laserkit: error: ")
    assert (
        "unknown kind 'yes-no'; use one of choice, next_token, generate, perplexity, semantic"
        in (res.stderr)
    )


def test_the_shipped_kinds_say_what_differs_between_them():
    assert declarable() == ["choice", "next_token", "generate", "perplexity", "semantic"]
    assert "lm-eval" in KINDS.names() and not KINDS.get("lm-eval").declarable
    gen = Task(name="g", kind="generate", match="f1")
    assert (gen.metric, gen.metrics(), gen.max_new_tokens, gen.forward_only) == (
        "f1",
        ("accuracy", "f1", "log_loss"),
        15,
        False,
    )
    assert Task(name="r", kind="generate", match="regex").metrics() == ("accuracy",)
    sem = Task(name="s", kind="semantic")
    assert (sem.metric, sem.max_new_tokens, sem.chat_template) == ("semantic_score", 512, "model")
    nt = Task(name="n", kind="next_token", topk=(1, 3))
    assert nt.metrics()[-2:] == ("top1_accuracy", "top3_accuracy") and nt.forward_only
    ppl = Task(name="p", kind="perplexity")
    assert (ppl.metric, ppl.higher_is_better, kind_of("perplexity").chunked) == (
        "perplexity",
        False,
        False,
    )
    assert kind_of("choice").chunked and kind_of("semantic").legacy_max_new_tokens == 128
    with pytest.raises(LaserkitError, match="^task 'q': unknown kind 'quiz'; use one of choice, "):
        Task(name="q", kind="quiz")
    with pytest.raises(LaserkitError, match="unknown kind 'lm-eval'"):
        Task(name="q", kind="lm-eval")  # lm-eval tasks come from --task lm-eval:NAME only


def test_masked_models_refuse_kinds_they_cannot_answer(tok):
    model = make_tiny("bert", vocab_size=len(tok))
    for kind, ex in (
        ("perplexity", Example("1", text="Some text to score.")),
        ("semantic", Example("1", "Say hi", chosen="hi", rejected="bye")),
    ):
        task = Task(name="t", kind=kind)
        task._examples = [ex]
        with pytest.raises(LaserkitError) as e:
            evaluate(model, tok, task, progress=False)
        assert str(e.value) == (
            f"masked language models score choice, next_token and generate tasks, not {kind!r}"
        )


def test_a_search_and_evaluate_split_by_one_rule():
    for n in range(0, 61):
        items = [Example(str(i), "p", answers=("a",)) for i in range(n)]
        for split in ("validation", "test", "all"):
            want = [int(e.id) for e in split_examples(items, split)]
            assert list(split_slice(n, split)) == want, (n, split)
    messages = []
    for call in (lambda: split_slice(5, "train"), lambda: split_examples([], "train")):
        with pytest.raises(LaserkitError) as e:
            call()
        messages.append(str(e.value))
    assert messages == ["unknown split 'train': use all, validation, test"] * 2


def test_readers_fill_the_fields_a_kind_reads(tmp_path):
    """A kind's ``fields`` tells the readers what its examples hold: a new kind that reads
    choices gets exactly the examples a choice task gets from the same file."""
    from laserkit.tasks.kinds import TaskKind

    class Ranked(TaskKind):
        name = "ranked-choice"
        fields = "choices"
        metric_names = ("accuracy",)

    data = tmp_path / "mc.jsonl"
    rows = [
        {"prompt": "2+2=", "choices": ["3", "4"], "answer": "4"},
        {"prompt": "1+1=", "choices": "1|2", "answer": 1},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    KINDS.register("ranked-choice", Ranked)
    try:
        (tmp_path / "r.yaml").write_text("kind: ranked-choice\ndata: mc.jsonl\n")
        (tmp_path / "c.yaml").write_text("kind: choice\ndata: mc.jsonl\n")
        got = load_examples(get_task(str(tmp_path / "r.yaml")))
        assert got == load_examples(get_task(str(tmp_path / "c.yaml")))
        assert [(e.choices, e.gold) for e in got] == [(("3", "4"), (1,)), (("1", "2"), (1,))]
    finally:
        KINDS._entries.pop("ranked-choice", None)
        kind_of.cache_clear()
