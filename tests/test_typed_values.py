"""Typed values between layers (issue 20): a run's result (search/result.py), an edit record
(edit/record.py) and a saved model's laserkit.json (io/save.py) are dataclasses whose JSON is
laserkit 0.1's, key for key, so stored runs and saved models read back unchanged."""

import json
import sqlite3
import tarfile
from pathlib import Path

import pytest
from conftest import make_tiny

from laserkit import Editor, Intervention
from laserkit.edit.record import EditRecord
from laserkit.io.save import RECORD, SavedRecord, edit_record, model_card, save
from laserkit.search.result import Chosen, RunResult, Scores
from laserkit.search.significance import lines

TESTS = Path(__file__).parent


def stored_results(tmp_path: Path) -> dict[str, dict]:
    """The results stored by runs made with main's code before the kinds (tests/data)."""
    with tarfile.open(TESTS / "data" / "runs-before-kinds.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    out = {}
    for db in sorted(tmp_path.glob("*/trials.db")):
        con = sqlite3.connect(db)
        (text,) = con.execute(
            "SELECT value_json FROM study_user_attributes WHERE key = 'result'"
        ).fetchone()
        con.close()
        out[db.parent.name] = json.loads(text)
    return out


def test_results_stored_before_read_back_key_for_key(tmp_path):
    results = stored_results(tmp_path)
    assert sorted(results) == ["compose-mp", "greedy-mp", "grid-rank", "grid-vendi"]
    for name, stored in results.items():
        typed = RunResult.from_json(stored)
        assert json.dumps(typed.to_json()) == json.dumps(stored), name  # order included
        assert typed.chosen.label == stored["chosen"]["label"]
        assert typed.best.test == stored["best"]["test"]
        assert typed.how == stored["strategy"]
        assert (typed.trials is None) == (stored["command"] != "search")


def test_a_result_keeps_keys_it_does_not_know_and_omits_what_it_lacks():
    stored = {
        "command": "greedy",
        "model": "m",
        "objective": {"task": "t"},
        "chosen": {"edits": [], "key": None, "label": "base"},
        "base": {"validation": {"score": 1.0}, "test": {"score": 2.0}},
        "best": {"validation": {"score": 1.0}, "test": {"score": 2.0}},
        "steps": [],
        "decided_on": "all",
        "from_the_future": [1, 2],
    }
    typed = RunResult.from_json(stored)
    assert typed.extra == {"from_the_future": [1, 2]} and typed.strategy is None
    assert typed.how == "greedy" and typed.same_text
    assert typed.to_json() == stored and list(typed.to_json()) == list(stored)
    # the typed value and its JSON give the same sentences
    assert lines(typed) == lines(stored)
    assert any("same text" in s for s in lines(stored))


def test_chosen_labels_the_edits_as_trial_keys_do():
    e = {"lname": "fc_in", "layer": 3, "intervention": {"kind": "rank-reduction", "rho": 0.1}}
    assert Chosen.of([e], "k").to_json() == {
        "edits": [e],
        "key": "k",
        "label": "fc_in@3:rank-reduction(ρ=0.1)",
    }
    assert Chosen.of([]).label == "base"
    assert Scores.from_json({"validation": {"n": 1}, "test": {"n": 2}}).test == {"n": 2}


def test_an_edit_record_writes_0_1_s_flat_record():
    model = make_tiny("llama")
    ed = Editor(model)
    (rec,) = ed.apply("fc_in", 1, Intervention(rho=0.5))
    assert isinstance(rec, EditRecord) and ed.records == [rec]
    (t,) = ed.targets("fc_in", 1)
    d = rec.to_json()
    # 0.1's record, built by hand: the location, the intervention's dict, then the report
    expected_head = {
        "lname": "fc_in",
        "layer": 1,
        "module": t.module,
        "rows": t.rows,
        "transposed": t.transposed,
        "shape": list(ed.read(t).shape),
        **Intervention(rho=0.5).to_dict(),
    }
    assert list(d)[: len(expected_head)] == list(expected_head)
    assert {k: d[k] for k in expected_head} == expected_head
    assert d["rank"] == int(min(d["shape"]) * 0.5) and 0 < d["rel_error"] < 1
    assert rec["rank"] == rec.rank == d["rank"] and rec.get("nope", 7) == 7
    assert rec.kind == "rank-reduction" and rec.rho == 0.5
    again = EditRecord.from_json(json.loads(json.dumps(d)))
    assert again.to_json() == json.loads(json.dumps(d))
    assert again.intervention == Intervention(rho=0.5).to_dict()
    assert "rank" in again.report and "rho" not in again.report


def test_a_saved_model_s_record_and_card_are_0_1_s(tmp_path):
    model = make_tiny("gpt2")
    ed = Editor(model)
    ed.apply("fc_out", 0, Intervention(rho=0.25))
    out = save(model, None, tmp_path / "m", ed.records, base="tiny", extra_record={"x": 1})
    doc = json.loads((out / RECORD).read_text())
    assert list(doc) == ["laserkit_version", "base_model", "created", "interventions", "x"]
    assert doc["interventions"] == json.loads(json.dumps([r.to_json() for r in ed.records]))
    back = SavedRecord.from_json(doc)
    assert back.base_model == "tiny" and back.extra == {"x": 1}
    assert back.to_json() == doc
    # typed records and their JSON make the same card and record
    plain = [r.to_json() for r in ed.records]
    assert model_card("tiny", ed.records) == model_card("tiny", plain)
    assert (out / "README.md").read_text() == model_card("tiny", plain)
    a, b = edit_record(ed.records, base="tiny"), edit_record(plain, base="tiny")
    assert {**a, "created": 0} == {**b, "created": 0}
    assert "| fc_out | 0 |" in model_card("tiny", plain) and "| 0.25 |" in model_card("tiny", plain)


@pytest.mark.parametrize("family", ["llama"])
def test_out_of_core_and_in_memory_make_the_same_typed_records(tmp_path, family):
    from laserkit.edit.ondisk import edit_checkpoint

    model = make_tiny(family)
    model.save_pretrained(tmp_path / "src")
    steps = [("fc_in", 1, Intervention(rho=0.5))]
    records, _ = edit_checkpoint(str(tmp_path / "src"), steps, None)
    ed = Editor(model)
    ed.apply(*steps[0])
    assert all(isinstance(r, EditRecord) for r in records) and len(records) == 1
    (a,), (b,) = records, ed.records
    assert {**a.to_json(), "rel_error": 0} == {**b.to_json(), "rel_error": 0}
    assert a.rel_error == pytest.approx(b.rel_error, rel=1e-4)


def test_a_0_1_strategy_s_json_outcome_makes_the_same_result_as_a_typed_one():
    from laserkit.search.result import Outcome

    summary = {"accuracy": 0.5, "n": 4}
    typed = Outcome(Chosen.of([]), Scores(summary, summary), Scores(summary, summary), trials=[])
    plain = {
        "chosen": {"edits": [], "key": None, "label": "base"},
        "base": {"validation": summary, "test": summary},
        "best": {"validation": summary, "test": summary},
        "trials": [],
    }
    head = dict(command="search", strategy="grid", run="r", model="m", objective={"task": "t"})
    a, b = RunResult.of(typed, **head), RunResult.of(plain, **head)
    assert a == b
    assert list(a.to_json()) == [*head, "chosen", "base", "best", "trials"]
