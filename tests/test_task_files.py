"""Your own task: every documented form of a task file gives the same examples, the worked
examples of docs/tasks.md load as documented, one schema refuses wrong keys in one line, a
reader can be named as module:function, chat templates reach the model, and the installed
`laserkit` command prints the schema, a dry run and the error for a wrong key."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny

from laserkit.core.errors import LaserkitError
from laserkit.eval.evaluate import evaluate, preview
from laserkit.tasks import get_task, list_tasks
from laserkit.tasks import sources as src
from laserkit.tasks.schema import parse_task, source_keys, task_keys
from laserkit.tasks.sources import load_examples
from laserkit.tasks.spec import Example

DOCS = Path(__file__).resolve().parent.parent / "docs" / "tasks.md"
LASERKIT = Path(sys.executable).parent / "laserkit"
RECORDS = [
    {"id": "q1", "question": "When did it end?", "answer": 1945},
    {"id": "q2", "question": "Which cities?", "answer": {"a": "Paris", "b": ["Lyon", "X"]}},
    {"id": "q3", "question": "Capital?", "answer": ["Paris", "Paris, France"]},
]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(src, "hub_reachable", lambda timeout=3.0: False)


def _jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_each_documented_form_gives_the_same_examples(tmp_path):
    _jsonl(tmp_path / "qa.jsonl", RECORDS)
    forms = {
        "flat.yaml": 'kind: generate\ndata: qa.jsonl\nprompt: "Q: {question}\\nA:"\n',
        "shipped.yaml": "qa:\n  kind: generate\n  data: qa.jsonl\n  sources:\n    local: "
        '{reader: fields, prompt: "Q: {question}\\nA:", answer: answer}\n',
        "flat.json": json.dumps(
            {"kind": "generate", "data": "qa.jsonl", "prompt": "Q: {question}\nA:"}
        ),
        "shipped.json": json.dumps(
            {
                "qa": {
                    "kind": "generate",
                    "data": "qa.jsonl",
                    "sources": {"local": {"prompt": "Q: {question}\nA:"}},
                }
            }
        ),
    }
    got = {}
    for name, text in forms.items():
        (tmp_path / name).write_text(text)
        got[name] = load_examples(get_task(str(tmp_path / name)))
    want = [
        Example("q1", "Q: When did it end?\nA:", answers=(1945,)),
        Example("q2", "Q: Which cities?\nA:", answers=({"a": "Paris", "b": ["Lyon", "X"]},)),
        Example("q3", "Q: Capital?\nA:", answers=("Paris", "Paris, France")),
    ]
    for name, exs in got.items():
        assert exs == want, name  # typed answers: 1945 stays a number, the dict stays a dict
    # a bare data file with the conventional fields is the same task with every default
    bare = _jsonl(
        tmp_path / "bare.jsonl",
        [
            {"id": r["id"], "prompt": f"Q: {r['question']}\nA:", "answer": r["answer"]}
            for r in RECORDS
        ],
    )
    assert load_examples(get_task(str(bare))) == want


def _doc_files(tmp_path: Path) -> dict[str, Path]:
    """The files of docs/tasks.md's worked examples, written out as a reader would copy them."""
    text = DOCS.read_text()
    files = {}
    for name, body in re.findall(
        r"`([\w.]+\.(?:csv|jsonl|yaml))`:\n\n```\w*\n(.*?)```", text, re.S
    ):
        files[name] = tmp_path / name
        files[name].write_text(body)
    return files


def test_worked_examples_in_the_docs_load_as_documented(tmp_path):
    files = _doc_files(tmp_path)
    assert {
        "capitals.csv",
        "capitals.yaml",
        "qa.jsonl",
        "qa.yaml",
        "trips.jsonl",
        "trips.yaml",
    } <= set(files)
    cap = get_task(str(files["capitals.yaml"]))
    exs = load_examples(cap)
    assert [(e.id, e.choices, e.gold) for e in exs] == [
        ("c1", ("Paris", "Lyon", "Nice"), (0,)),
        ("c2", ("Milan", "Rome", "Turin"), (1,)),
    ]
    assert exs[0].prompt == "Q: What is the capital of France?\nA:" and cap.metric == "accuracy"
    qa = get_task(str(files["qa.yaml"]))
    assert (qa.name, qa.chat_template, qa.match, qa.max_new_tokens) == (
        "qa",
        "model",
        "contains",
        10,
    )
    assert [e.answers for e in load_examples(qa)] == [("Shakespeare", "William Shakespeare"), (8,)]
    trips = get_task(str(files["trips.yaml"]))
    (ex,) = load_examples(trips)
    assert trips.match == "all_parts" and ex.answers == (
        {"from": "Paris", "to": ["Geneva", "Genève"], "year": 2002},
    )
    items = preview(trips)
    assert items[0]["parts"] == [["Paris"], ["Geneva", "Genève"], [2002]]


def test_one_schema_for_built_in_and_user_tasks(tmp_path):
    # copying a shipped definition (here bbh-wikidata's local spec) into a file works
    _jsonl(tmp_path / "w.json", [])
    (tmp_path / "w.json").write_text(
        json.dumps({"examples": [{"input": "The capital of France is", "target": ["Paris"]}]})
    )
    (tmp_path / "copy.yaml").write_text(
        "bbh-wikidata:\n  kind: generate\n  max_new_tokens: 15\n  data: w.json\n"
        '  sources:\n    local: {reader: bigbench, prompt: "{input}"}\n'
    )
    (ex,) = load_examples(get_task(str(tmp_path / "copy.yaml")))
    assert (ex.prompt, ex.answers) == ("The capital of France is", ("Paris",))
    # every key a built-in uses is a schema key; nothing else is accepted anywhere
    keys = set(task_keys())
    for t in list_tasks():
        assert t.metric in t.metrics()
    with pytest.raises(LaserkitError) as e:
        parse_task("x", {"kind": "generate", "matchh": "exact"}, "defs.yaml")
    msg = str(e.value)
    assert "unknown key 'matchh'" in msg and all(k in msg for k in keys | {"prompt", "answer"})
    with pytest.raises(LaserkitError, match=r"sources.hub: unknown key 'file'.*path"):
        parse_task(
            "x", {"kind": "choice", "sources": {"hub": {"path": "a/b", "file": "f"}}}, "defs.yaml"
        )
    with pytest.raises(
        LaserkitError,
        match=r"sources: unknown key 'remote'; accepted: "
        "packaged, local, hub",
    ):
        parse_task("x", {"kind": "choice", "sources": {"remote": {}}}, "defs.yaml")
    with pytest.raises(LaserkitError, match="metric 'f1' is not reported by a choice task"):
        parse_task("x", {"kind": "choice", "metric": "f1"}, "d")
    with pytest.raises(LaserkitError, match="system_prompt needs a chat template"):
        parse_task("x", {"kind": "generate", "system_prompt": "Be brief."}, "d")
    with pytest.raises(LaserkitError, match="perplexity task scores raw text"):
        parse_task("x", {"kind": "perplexity", "chat_template": "model"}, "d")
    assert {"reader", "prompt", "answer", "path"} <= set(source_keys())
    t = parse_task("x", {"kind": "generate", "match": "f1"}, "d")
    assert (t.metric, t.higher_is_better) == ("f1", True)
    t = parse_task("x", {"kind": "choice", "metric": "log_loss"}, "d")
    assert (t.metric, t.higher_is_better) == ("log_loss", False)


def test_a_file_with_several_tasks_needs_a_name(tmp_path):
    _jsonl(tmp_path / "qa.jsonl", RECORDS)
    path = tmp_path / "two.yaml"
    path.write_text(
        'a: {kind: generate, data: qa.jsonl, prompt: "{question}"}\n'
        'b: {kind: generate, data: qa.jsonl, prompt: "Q {question}",\n'
        "    match: all_parts}\n"
    )
    with pytest.raises(LaserkitError, match=r"declares tasks a, b: pick one with --task .*#NAME"):
        get_task(str(path))
    b = get_task(f"{path}#b")
    assert b.name == "b" and b.match == "all_parts"
    assert load_examples(b)[0].prompt == "Q When did it end?"


def read_upper(records, spec, kind, meta, origin):
    """A reader of a 'new release format', living outside laserkit."""
    return [
        Example(str(r["k"]), spec.own["prefix"] + r["q"].upper(), answers=(r["a"],))
        for r in records
    ]


read_upper.keys = {"prefix": "text put before each question"}


def test_reader_named_as_module_function(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    _jsonl(tmp_path / "r.jsonl", [{"k": 1, "q": "who?", "a": "me"}])
    (tmp_path / "t.yaml").write_text(
        "kind: generate\ndata: r.jsonl\nreader: test_task_files:read_upper\nprefix: '>> '\n"
    )
    (ex,) = load_examples(get_task(str(tmp_path / "t.yaml")))
    assert (ex.id, ex.prompt, ex.answers) == ("1", ">> WHO?", ("me",))
    (tmp_path / "u.yaml").write_text(
        "kind: generate\ndata: r.jsonl\nreader: test_task_files:read_upper\nprefx: x\n"
    )
    with pytest.raises(LaserkitError, match="unknown key 'prefx'.*prefix"):
        get_task(str(tmp_path / "u.yaml"))
    (tmp_path / "v.yaml").write_text("kind: generate\ndata: r.jsonl\nreader: nowhere:nothing\n")
    with pytest.raises(LaserkitError, match="cannot import reader 'nowhere:nothing'"):
        get_task(str(tmp_path / "v.yaml"))


# -- chat templates reach the model ----------------------------------------------------------


@pytest.fixture(scope="module")
def tok(default_model_dir):
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(default_model_dir)  # SmolLM2-Instruct: has a template
    t.pad_token = t.pad_token or t.eos_token
    return t


@pytest.fixture(scope="module")
def tiny():
    return make_tiny("llama", vocab_size=49152, num_hidden_layers=1)


def _task(kind: str, examples: list[Example], **kw):
    t = parse_task("t", {"kind": kind, **kw}, "test")
    t._examples = examples
    return t


def _greedy(model, ids: list[int], n: int, eos: set[int]) -> list[int]:
    """Direct greedy decoding: the whole prefix recomputed at every step, no cache, no batch."""
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt in eos:
                break
            out.append(nxt)
    return out


def test_generate_with_the_models_chat_template_and_a_system_prompt(tiny, tok):
    exs = [Example("1", "What is the capital of France?", answers=("Paris",))]
    task = _task(
        "generate", exs, chat_template="model", system_prompt="Answer briefly.", max_new_tokens=4
    )
    res = evaluate(tiny, tok, task, progress=False)
    text = tok.apply_chat_template(
        [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": exs[0].prompt},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert "Answer briefly." in text and text.endswith("assistant\n")
    eos = {
        tok.eos_token_id,
        *(
            [tiny.generation_config.eos_token_id]
            if isinstance(tiny.generation_config.eos_token_id, int)
            else []
        ),
    } - {None}
    gen = _greedy(tiny, tok(text, add_special_tokens=False)["input_ids"], 4, eos)
    assert res.records[0]["prediction"] == tok.decode(gen, skip_special_tokens=True)
    assert res.summary["chat_template"] == "model" and res.summary["metric"] == "accuracy"
    assert res.summary["system_prompt"] == "Answer briefly."
    # the log-loss continues the assistant's turn: the answer right after "assistant\n"
    ids = tok(text + "Paris", add_special_tokens=False)["input_ids"]
    start = len(tok(text, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        lp = tiny(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    want = -sum(float(lp[t - 1, ids[t]]) for t in range(start, len(ids)))
    assert res.records[0]["log_loss"] == pytest.approx(want, abs=1e-4)


def test_choice_with_an_inline_jinja_template(tiny, tok):
    jinja = (
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    ex = Example("1", "Is the sky blue?", choices=("yes", "no"), gold=(0,))
    task = _task("choice", [ex], chat_template=jinja)
    assert preview(task, tok)[0]["prompt"] == "[user] Is the sky blue?\n[assistant]"
    res = evaluate(tiny, tok, task, progress=False)
    for choice, got in zip(ex.choices, res.records[0]["logprobs"], strict=True):
        p = tok("[user] Is the sky blue?\n[assistant]", add_special_tokens=False)["input_ids"]
        ids = p + tok(choice, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = tiny(torch.tensor([ids])).logits[0].float().log_softmax(-1)
        assert got == pytest.approx(
            sum(float(lp[t - 1, ids[t]]) for t in range(len(p), len(ids))), abs=1e-4
        )


def test_hand_written_chatml_keeps_its_final_newline(tiny, tok, monkeypatch):
    import laserkit.eval.scoring as S

    seen = []
    real = S.greedy_generate
    monkeypatch.setattr(
        S,
        "greedy_generate",
        lambda model, prompts, **kw: seen.extend(prompts) or real(model, prompts, **kw),
    )
    prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    evaluate(
        tiny,
        tok,
        _task("generate", [Example("1", prompt, answers=("hello",))], max_new_tokens=2),
        progress=False,
    )
    assert seen == [tok(prompt)["input_ids"]] and tok.decode(seen[0]).endswith("assistant\n")


# -- the installed command ------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LASERKIT), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={
            "COLUMNS": "200",
            "PATH": "/usr/bin:/bin",
            "HOME": str(cwd),
            "LASERKIT_CACHE": str(Path.home() / ".cache" / "laserkit"),
        },
        timeout=120,
    )


def test_cli_schema_dry_run_and_wrong_key(tmp_path, default_model_dir):
    res = _cli("tasks", "--schema", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    for key in task_keys() + source_keys() + ["paraphrases", "mode", "join"]:
        assert re.search(rf"│ {key}\s", res.stdout), key
    for mode in ("contains", "exact", "all_parts", "f1", "regex"):
        assert mode in res.stdout

    _jsonl(tmp_path / "qa.jsonl", RECORDS)
    (tmp_path / "qa.yaml").write_text(
        'kind: generate\ndata: qa.jsonl\nprompt: "Q: {question}"\n'
        "chat_template: model\nsystem_prompt: Be brief.\n"
    )
    res = _cli(
        "eval",
        str(default_model_dir),
        "--task",
        "qa.yaml",
        "--dry-run",
        "--show",
        "2",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "metric accuracy" in out and "match contains" in out and "chat_template model" in out
    assert "<|im_start|>system\nBe brief.<|im_end|>" in out and "Q: When did it end?" in out
    assert "[1945]" in out and '[["Paris"], ["Lyon", "X"]]' in out and "q3" not in out

    (tmp_path / "bad.yaml").write_text("kind: generate\ndata: qa.jsonl\nprompt: x\nansewr: a\n")
    res = _cli("eval", "--task", "bad.yaml", "--dry-run", cwd=tmp_path)
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("laserkit: error: ")
    assert "unknown key 'ansewr'; accepted:" in lines[0] and " answer," in lines[0]


def test_task_modules_import_without_a_cycle():
    """spec (Example, Task) and matching are leaves: no module of laserkit/tasks imports one
    that imports it back, counting imports inside functions too. The one lazy edge allowed is
    sources.load_examples(task) loading the data."""
    import ast

    folder = Path(__file__).resolve().parent.parent / "laserkit" / "tasks"
    graph = {}
    for f in folder.glob("*.py"):
        graph[f.stem] = {
            n.module
            for n in ast.walk(ast.parse(f.read_text()))
            if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module
        }
    graph["spec"].discard("sources")
    assert graph["spec"] == {"matching"} and graph["matching"] == set()

    def reach(start, seen=()):
        for m in graph.get(start, ()):
            assert m not in seen + (start,), f"import cycle through {m}"
            reach(m, seen + (start,))

    for name in graph:
        reach(name)
