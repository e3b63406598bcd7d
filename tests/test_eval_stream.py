"""eval --out keeps what it scored (issue 18): records are appended chunk by chunk, a stopped
evaluation continues where it stopped, the result equals one uninterrupted evaluate() pass, and
a rerun with another model, other data or other options is refused rather than mixed."""

from __future__ import annotations

import json

import pytest
import torch
from test_search_cli import tiny_dir  # noqa: F401 - a fixture

import laserkit.eval_stream as ES
from laserkit.errors import LaserkitError
from laserkit.evaluate import evaluate
from laserkit.loading import load
from laserkit.tasks import get_task

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
    got = ES.evaluate_to(tmp_path / "e", loaded.model, loaded.tokenizer, task, limit=11, seed=3,
                         chunk=4, **kw)
    same(got.records, whole.records, 1e-5)
    same(got.summary, whole.summary, 1e-5)
    lines = (tmp_path / "e" / ES.PARTIAL).read_text().splitlines()
    assert len(lines) == 11 and sum("chunk" in json.loads(ln) for ln in lines) == 3


def test_a_stopped_evaluation_continues_and_refuses_other_options(loaded, tmp_path,
                                                                  monkeypatch):
    task = get_task("fever-bigbench")
    kw = dict(batch_size=4, progress=False)
    whole = evaluate(loaded.model, loaded.tokenizer, task, limit=10, **kw)
    real, calls = ES.evaluate, []

    def stopped_at_third(*a, **k):
        calls.append(len(a[2].examples()))
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
            ES.evaluate_to(out, loaded.model, loaded.tokenizer, task, chunk=3,
                           **{"limit": 10, **kw, **other})
    with torch.no_grad():
        loaded.model.model.norm.weight.add_(1.0)
        try:
            with pytest.raises(LaserkitError, match="another model"):
                ES.evaluate_to(out, loaded.model, loaded.tokenizer, task, limit=10, chunk=3,
                               **kw)
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
