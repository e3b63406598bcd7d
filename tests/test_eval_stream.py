"""eval --out keeps what it scored (issue 18): records are appended chunk by chunk, a stopped
evaluation continues where it stopped, the result equals one uninterrupted evaluate() pass, and
a rerun with another model, other data or other options is refused rather than mixed."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import default_sigint
from test_search_cli import tiny_dir  # noqa: F401 - a fixture

import laserkit.eval.stream as ES
from laserkit.core.errors import LaserkitError
from laserkit.eval.evaluate import evaluate
from laserkit.io.load import load
from laserkit.tasks import get_task
from laserkit.tasks.sources import load_examples

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def loaded(tiny_dir):  # noqa: F811
    return load(tiny_dir, dtype="float32", device="cpu")


def same(a, b, rel: float = 1e-12) -> None:
    """Equal, floats up to ``rel`` (chunks batch the examples differently: the last bits of a
    log-probability move, nothing else may); the wall clock aside."""
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            if k != "seconds":
                same(a[k], b[k], rel)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same(x, y, rel)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=rel, abs=rel)
    else:
        assert a == b


@pytest.mark.parametrize("name", ["fever-bigbench", "bbh-wikidata-bigbench"])
def test_chunked_evaluation_equals_one_pass(loaded, tmp_path, name):
    task = get_task(name)
    kw = dict(batch_size=4, progress=False, max_new_tokens=3)
    whole = evaluate(loaded.model, loaded.tokenizer, task, limit=11, seed=3, **kw)
    got = ES.evaluate_to(
        tmp_path / "e", loaded.model, loaded.tokenizer, task, limit=11, seed=3, chunk=4, **kw
    )
    same(got.records, whole.records, 1e-5)
    same(got.summary, whole.summary, 1e-5)
    lines = (tmp_path / "e" / ES.PARTIAL).read_text().splitlines()
    assert len(lines) == 11 and sum("chunk" in json.loads(ln) for ln in lines) == 3


def test_a_stopped_evaluation_continues_and_refuses_other_options(loaded, tmp_path, monkeypatch):
    task = get_task("fever-bigbench")
    kw = dict(batch_size=4, progress=False)
    whole = evaluate(loaded.model, loaded.tokenizer, task, limit=10, **kw)
    real, calls = ES.evaluate, []

    def stopped_at_third(*a, **k):
        calls.append(len(load_examples(a[2])))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ES, "evaluate", stopped_at_third)
    out = tmp_path / "e"
    with pytest.raises(KeyboardInterrupt):
        ES.evaluate_to(out, loaded.model, loaded.tokenizer, task, limit=10, chunk=3, **kw)
    kept = (out / ES.PARTIAL).read_text()
    with open(out / ES.PARTIAL, "a") as f:  # a kill in the middle of an append
        f.write('{"record": {"id": "torn"')
    assert len(kept.splitlines()) == 6

    for other in (dict(limit=9), dict(seed=1), dict(chat_template="chatml")):
        with pytest.raises(LaserkitError, match="holds a stopped evaluation of another"):
            ES.evaluate_to(
                out, loaded.model, loaded.tokenizer, task, chunk=3, **{"limit": 10, **kw, **other}
            )
    with torch.no_grad():
        loaded.model.model.norm.weight.add_(1.0)
        try:
            with pytest.raises(LaserkitError, match="another model"):
                ES.evaluate_to(out, loaded.model, loaded.tokenizer, task, limit=10, chunk=3, **kw)
        finally:
            loaded.model.model.norm.weight.sub_(1.0)

    calls.clear()
    monkeypatch.setattr(ES, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = ES.evaluate_to(out, loaded.model, loaded.tokenizer, task, limit=10, chunk=3, **kw)
    assert len(calls) == 2  # only the chunks not kept: 6..8 and 9
    same(got.records, whole.records, 1e-5)
    same(got.summary, whole.summary, 1e-5)
    got.write(out)  # published: the partial files go
    assert sorted(p.name for p in out.iterdir()) == ["records.jsonl", "summary.json"]


def test_installed_eval_stopped_by_ctrl_c_continues(tmp_path, tiny_dir):  # noqa: F811
    """The command itself: Ctrl-C once some chunks are appended, then the same command
    continues after them and publishes every record; progress lines reach a non-terminal."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    exe = str(Path(sys.prefix) / "bin" / "laserkit")
    args = [
        exe,
        "eval",
        str(tiny_dir),
        "--task",
        "fever-bigbench",
        "--limit",
        "1500",
        "--batch-size",
        "1",
        "--out",
        "e",
        "--dtype",
        "float32",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LASERKIT_PROGRESS_SECONDS": "0"}
    p = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,  # a background suite inherits SIGINT ignored
    )
    partial = tmp_path / "e" / ES.PARTIAL
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and p.poll() is None:
        if partial.exists() and partial.read_text().count("\n") >= 64:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    kept = partial.read_text().count("\n")
    assert 64 <= kept < 1500 and "records scored so far are kept" in err
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (
        f"continuing the evaluation in e: {kept - kept % 32}" in again.stderr
        or f"continuing the evaluation in e: {kept}" in again.stderr
    ), again.stderr[:2000]
    assert "scoring: " in again.stderr  # a progress line, stderr being a pipe
    records = (tmp_path / "e" / "records.jsonl").read_text().splitlines()
    assert len(records) == 1500 and len({json.loads(r)["id"] for r in records}) == 1500
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["records.jsonl", "summary.json"]


def test_an_evaluation_that_fails_before_keeping_anything_leaves_no_out(
    loaded, tmp_path, monkeypatch
):
    def broken(*a, **k):
        raise LaserkitError("the model's outputs are NaN")

    monkeypatch.setattr(ES, "evaluate", broken)
    with pytest.raises(LaserkitError):
        ES.evaluate_to(
            tmp_path / "new",
            loaded.model,
            loaded.tokenizer,
            get_task("fever-bigbench"),
            limit=4,
            batch_size=4,
            progress=False,
        )
    assert not (tmp_path / "new").exists()
