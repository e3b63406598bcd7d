"""dpo-semantic as laserRMT runs it (rmt_laser_dpo.py, lib/utils/load_benchmark_dataset.py,
lib/utils/prompt_template.py): the hub formats read from local files, its length filters and
first-128 rule, its ChatML prompt with the system turn (compared with the reference's f-string
written out here), its generation length, and that length as part of a run's identity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_tiny

from laserkit.core.errors import LaserkitError
from laserkit.eval import scoring as S
from laserkit.eval.evaluate import evaluate, preview
from laserkit.search.config import ObjectiveConfig, RunConfig
from laserkit.tasks import get_task
from laserkit.tasks.sources import load_examples

LASERKIT = Path(sys.executable).parent / "laserkit"


def reference_prompt(system: str, user: str) -> str:
    """laserRMT's get_llm_prompt for chatml, written out."""
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
        f"<|im_start|>assistant\n"
    )


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def orca(
    i: int,
    system: str = "You are helpful.",
    q: str | None = None,
    chosen: str = "yes",
    rejected: str = "no",
) -> dict:
    return {
        "system": system,
        "question": q if q is not None else f"question {i}?",
        "chosen": chosen,
        "rejected": rejected,
    }


def ultra(
    i: int, prompt: str | None = None, chosen: str = "good answer", rejected: str = "bad answer"
) -> dict:
    p = prompt if prompt is not None else f"prompt {i}"
    return {
        "prompt": p,
        "prompt_id": f"p{i}",
        "chosen": [{"role": "user", "content": p}, {"role": "assistant", "content": chosen}],
        "rejected": [{"role": "user", "content": p}, {"role": "assistant", "content": rejected}],
    }


def test_orca_format_filters_first_128_and_the_system_turn(tmp_path):
    sys_ = "S" * 100
    records = [
        orca(0, sys_, "q" * 412),  # 100 + 412 = 512: kept (≤ 512)
        orca(1, sys_, "q" * 413),  # 513: dropped
        orca(2, chosen="c" * 513),  # chosen too long: dropped
        orca(3, rejected="r" * 513),  # rejected too long: dropped
        orca(4, chosen="c" * 512, rejected="r" * 512),  # both at 512: kept
        orca(5, system=""),
    ]  # an empty system turn is still a turn
    records += [orca(i) for i in range(6, 300)]
    task = get_task("dpo-semantic", _jsonl(tmp_path / "orca.jsonl", records))
    exs = load_examples(task)
    assert len(exs) == 128  # the first 128 that pass, in order, no shuffle
    want = [0, 4, 5] + list(range(6, 131))
    assert [e.prompt for e in exs] == [records[i]["question"] for i in want]
    assert exs[0].system == sys_ and exs[2].system == ""
    shown = preview(task, n=3)
    for item, i in zip(shown, want[:3], strict=True):
        assert item["prompt"] == reference_prompt(records[i]["system"], records[i]["question"])
    assert shown[0]["chosen"] == "yes" and shown[1]["chosen"] == "c" * 512


def test_ultrafeedback_format_takes_the_assistant_turn(tmp_path):
    records = [
        ultra(0, prompt="p" * 513),  # prompt too long: dropped
        ultra(1, chosen="c" * 513),  # assistant answer too long: dropped
        ultra(2, rejected="r" * 600),
        ultra(3, chosen="the chosen reply", rejected="the rejected reply"),
        ultra(4, prompt="x" * 512),
    ]
    task = get_task("dpo-semantic", _jsonl(tmp_path / "uf.jsonl", records))
    exs = load_examples(task)
    assert [e.prompt for e in exs] == ["prompt 3", "x" * 512]
    # the assistant's message, not the user turn laserRMT's chosen[0] reads (see docs/methods.md)
    assert (exs[0].chosen, exs[0].rejected) == ("the chosen reply", "the rejected reply")
    assert exs[0].system is None  # no system field: the task's empty system turn
    assert preview(task, n=1)[0]["prompt"] == reference_prompt("", "prompt 3")


def test_generation_sees_the_reference_prompt_tokens_and_length(
    tmp_path, monkeypatch, default_model_dir
):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    model = make_tiny("llama", vocab_size=49152, num_hidden_layers=1)
    records = [orca(0, "Be terse.", "What is 2+2?", "4", "5"), orca(1, "", "Say hi", "hi", "no")]
    task = get_task("dpo-semantic", _jsonl(tmp_path / "o.jsonl", records))
    assert task.max_new_tokens == 512 and task.chat_template == "chatml"
    seen, lengths = [], []
    real = S.greedy_generate

    def spy(m, prompts, **kw):
        seen.extend(prompts)
        lengths.append(kw["max_new_tokens"])
        return real(m, prompts, **{**kw, "max_new_tokens": 2})

    monkeypatch.setattr(S, "greedy_generate", spy)
    res = evaluate(model, tok, task, progress=False, embedder="self")
    # the reference tokenizes its prompt string with the tokenizer's defaults: tok([prompt])
    assert seen == [tok(reference_prompt(r["system"], r["question"]))["input_ids"] for r in records]
    assert lengths == [512] and res.summary["max_new_tokens"] == 512
    s = res.summary
    assert s["score"] == pytest.approx(
        sum(r["cos_chosen"] - r["cos_rejected"] for r in res.records) / 2
    )
    evaluate(model, tok, task, progress=False, embedder="self", max_new_tokens=7)
    assert lengths[-1] == 7


def test_generation_length_is_part_of_the_runs_identity(tmp_path):
    a = ObjectiveConfig.from_cli("dpo-semantic-bigbench")
    b = ObjectiveConfig.from_cli("dpo-semantic-bigbench", max_new_tokens=64)
    assert (a.max_new_tokens, b.max_new_tokens) == (512, 64)
    ra = RunConfig(strategy="greedy", model="m", objective=a)
    rb = RunConfig(strategy="greedy", model="m", objective=b)
    assert ra.differs(rb) == ["objective"]
    assert ObjectiveConfig.from_json(ra.to_json()["objective"]).max_new_tokens == 512
    with pytest.raises(LaserkitError, match="at least 1"):
        ObjectiveConfig.from_cli("dpo-semantic-bigbench", max_new_tokens=0)


def test_installed_cli_renames_and_offline_message(tmp_path):
    res = subprocess.run(
        [str(LASERKIT), "eval", "--task", "dpo-semantic-hhh", "--dry-run", "--show", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "COLUMNS": "200",
            "HF_HUB_OFFLINE": "1",
        },
    )
    assert res.returncode == 0, res.stderr
    assert "dpo-semantic-bigbench" in res.stdout
    assert "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n" in res.stdout
    res = subprocess.run(
        [str(LASERKIT), "eval", "--task", "dpo-semantic", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 2 and res.stdout == ""
    line = res.stderr.strip()
    assert line.startswith("laserkit: error: no data for task 'dpo-semantic'") and "\n" not in line


def test_a_semantic_run_made_before_lengths_were_stored_resumes_only_at_its_128(tmp_path):
    """Runs stored no generation length before laserRMT's 512 became the default; such a run
    generated 128 tokens. Resuming it at 512 would mix two computations in one table: refused in
    one line that says what to add; at 128 it continues and the length is stored from then on."""
    from laserkit.core.errors import LaserkitError
    from laserkit.search.config import ObjectiveConfig, RunConfig
    from laserkit.search.store import TrialStore, default_url

    def cfg(tokens):
        obj = ObjectiveConfig(task="dpo-semantic-bigbench", limit=6, max_new_tokens=tokens)
        return RunConfig(
            strategy="greedy",
            model="m",
            objective=obj,
            candidates=[{"lname": "fc_in", "layer": 0, "intervention": {"kind": "mp-threshold"}}],
        )

    url = default_url(tmp_path)
    TrialStore(url, "old", create=cfg(None))
    with pytest.raises(LaserkitError, match="add --max-new-tokens 128"):
        TrialStore(url, "old", create=cfg(512), resume=True)
    TrialStore(url, "old", create=cfg(128), resume=True)
    assert TrialStore(url, "old").config.objective.max_new_tokens == 128
    with pytest.raises(LaserkitError, match="differs"):  # stored now: 512 is plainly different
        TrialStore(url, "old", create=cfg(512), resume=True)


def test_interleaved_sources_put_every_source_into_validation():
    """With several sources read one after another the first 20% (validation) came from the
    first alone (orca_dpo_pairs; the harmless HHH file). interleave takes them in turn."""
    from collections import Counter

    from laserkit.eval.evaluate import split_examples
    from laserkit.tasks import get_task
    from laserkit.tasks.sources import combine
    from laserkit.tasks.spec import Example

    a = [Example(id=f"a{i}") for i in range(3)]
    b = [Example(id=f"b{i}") for i in range(1)]
    assert [e.id for e in combine([a, b], False)] == ["a0", "a1", "a2", "b0"]
    assert [e.id for e in combine([a, b], True)] == ["a0", "b0", "a1", "a2"]

    task = get_task("dpo-semantic-bigbench")
    examples = load_examples(task)
    sizes = Counter(e.id.split(":")[0] for e in examples)
    assert len(sizes) == 4 and sum(sizes.values()) == len(examples)
    validation = Counter(e.id.split(":")[0] for e in split_examples(examples, "validation"))
    assert set(validation) == set(sizes)
    assert max(validation.values()) - min(validation.values()) <= 1
