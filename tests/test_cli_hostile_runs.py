"""Runs that stay one experiment, and hostile input, through the INSTALLED ``laserkit`` command
(issue 18, runs-and-input half).

- A search refused for a bad value creates nothing, so the corrected command works.
- A run records fingerprints of its model's weights and of its examples: a --resume on changed
  data, a worker with another model and a resume with another --batch-size are refused in one
  line naming what changed, and the run's files are left as they were.
- A finished run on read-only storage can be read: status, report --out, apply --out.
- Hostile task files end in one line naming the file and what is accepted (exit 2).

Subprocesses run in a thread pool: each spends most of its time importing torch."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import make_tiny
from test_search_cli import tiny_dir  # noqa: F401 - a fixture

from laserkit.core.errors import LaserkitError

BIN = Path(sys.prefix) / "bin" / "laserkit"
LASERKIT = str(BIN) if BIN.exists() else shutil.which("laserkit")
SEARCH = (
    "--lname",
    "fc_in",
    "--lnum=-1",
    "--rho",
    "0.5",
    "--dtype",
    "float32",
    "--device",
    "cpu",
    "--no-save",
)


def lk(*args: object, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LASERKIT, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env or {})},
    )


def one_line(res: subprocess.CompletedProcess) -> str:
    """The single error line of a refused command (exit 2, nothing else on stderr)."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, (res.returncode, res.stderr[-3000:])
    assert lines[0].startswith("laserkit: error: ") and "Traceback" not in res.stderr
    return lines[0]


def parallel(calls: dict[str, tuple]) -> dict[str, subprocess.CompletedProcess]:
    with ThreadPoolExecutor(4) as pool:
        futures = {k: pool.submit(lk, *args, cwd=cwd) for k, (cwd, args) in calls.items()}
        return {k: f.result() for k, f in futures.items()}


def files(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``folder`` with its inode, mode and bytes."""
    return {
        str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mode, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_task(path: Path, flip: bool = False) -> Path:
    rows = [
        {
            "id": str(i),
            "prompt": f"Is {i} even?",
            "choices": ["yes", "no"],
            "answer": ["yes", "no"][(i + flip) % 2],
        }
        for i in range(10)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_dir):  # noqa: F811
    """Bad values refused before anything is created; then the corrected command makes the run
    (in the same --run-dir) that the other tests use."""
    home = tmp_path_factory.mktemp("hostile-runs")
    data = write_task(home / "d.jsonl")
    base = ("search", tiny_dir, "--task", data, "--run-dir", "run", *SEARCH)
    bad = {
        "rho nan": (["--rho", "nan,0.5"], "--rho nan,0.5"),
        "limit 0": (["--limit", "0"], "--limit 0"),
        "limit -1": (["--limit", "-1"], "--limit -1"),
        "batch -1": (["--batch-size", "-1"], "--batch-size -1"),
        "cache nan": (["--cache-gb", "nan"], "--cache-gb nan"),
        "no store": (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "trial store"),
    }
    ran = parallel({k: (home, (*base, *extra)) for k, (extra, _) in bad.items()})
    for k, (_, says) in bad.items():
        assert says in one_line(ran[k]), k
    assert not (home / "run").exists()  # nothing was created: the corrected command works
    ok = lk(*base, cwd=home)
    assert ok.returncode == 0, ok.stderr[-3000:]
    return home


def test_a_model_without_tokenizer_is_refused_before_the_run_exists(tmp_path):
    make_tiny("llama", num_hidden_layers=2).save_pretrained(tmp_path / "notok")
    res = lk(
        "search",
        "notok",
        "--task",
        "fever-bigbench",
        "--limit",
        "10",
        "--run-dir",
        "r",
        *SEARCH,
        cwd=tmp_path,
    )
    assert "tokenizer" in one_line(res)
    assert not (tmp_path / "r").exists()


def test_resume_and_workers_refuse_other_data_model_or_batch_size(finished, tiny_dir):  # noqa: F811
    run = finished / "run"
    before = files(run)
    data = finished / "d.jsonl"
    original = data.read_bytes()
    other = finished / "other-model"
    if not other.exists():
        shutil.copytree(tiny_dir, other)
        from safetensors.torch import load_file, save_file

        (weights,) = other.glob("*.safetensors")
        sd = load_file(weights)
        name = next(k for k in sd if k.endswith("mlp.down_proj.weight"))
        sd[name] = sd[name] + 1e-3  # one matrix differs
        save_file(sd, weights, metadata={"format": "pt"})
    resume = ("search", tiny_dir, "--task", data, "--run-dir", "run", *SEARCH, "--resume")
    write_task(data, flip=True)  # labels flipped in place
    try:
        ran = parallel(
            {
                "data": (finished, resume),
                "batch": (finished, (*resume, "--batch-size", "4")),
                "worker": (
                    finished,
                    (
                        "worker",
                        f"sqlite:///{run / 'trials.db'}",
                        "--run",
                        "run",
                        "--model",
                        other,
                        "--device",
                        "cpu",
                    ),
                ),
            }
        )
    finally:
        data.write_bytes(original)
    assert "data fingerprint" in one_line(ran["data"])
    line = one_line(ran["batch"])
    assert "batch_size (--batch-size: 16 in the run, 4 here)" in line, line
    assert "the model's weights" in one_line(ran["worker"])
    assert files(run) == before  # nothing written into the run
    again = lk(*resume, cwd=finished)  # the original data resumes: nothing left to do
    assert again.returncode == 0, again.stderr[-2000:]
    assert (
        json.loads((run / "result.json").read_text())["trials"]
        == json.loads(before["result.json"][2])["trials"]
    )


@contextmanager
def read_only_view(folder: Path, at: Path):
    """``folder`` seen read-only at ``at``: a read-only bind mount where we may mount (root,
    for whom permission bits do not stop writes), else a copy without write permission."""
    at.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "--bind", str(folder), str(at)], capture_output=True
        ).returncode
        == 0
    )
    if mounted:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(at)]).returncode:
            subprocess.run(["umount", str(at)])
            pytest.fail("cannot remount the bind mount read-only")
    else:
        if os.geteuid() == 0:
            pytest.fail("running as root without mount: cannot make storage read-only")
        at.rmdir()
        shutil.copytree(folder, at)
        for p in sorted(at.rglob("*"), reverse=True) + [at]:
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        with pytest.raises(OSError):
            (at / "probe").write_text("x")
        yield at
    finally:
        if mounted:
            subprocess.run(["umount", str(at)])
        else:
            for p in [at, *at.rglob("*")]:
                p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_a_run_on_read_only_storage_can_be_read(finished, tmp_path):
    """An archived run mounted read-only (under another name): status, report --out ELSEWHERE
    and apply --out ELSEWHERE work and write nothing into it (no trials.db.lock)."""
    lock = finished / "run" / "trials.db.lock"
    lock.unlink(missing_ok=True)
    before = files(finished / "run")
    with read_only_view(finished / "run", tmp_path / "archive") as ro:
        ran = parallel(
            {
                "status": (tmp_path, ("status", ro)),
                "report": (tmp_path, ("report", ro, "--out", tmp_path / "rep")),
                "apply": (tmp_path, ("apply", ro, "--out", tmp_path / "model", "--device", "cpu")),
            }
        )
        for k, res in ran.items():
            assert res.returncode == 0, (k, res.stderr[-2000:])
        assert "finished" in ran["status"].stdout
        assert (tmp_path / "rep" / "report.md").exists()
        assert (tmp_path / "model" / "config.json").exists()
    assert files(finished / "run") == before and not lock.exists()


def test_hostile_task_files_end_in_one_line(tmp_path, tiny_dir):  # noqa: F811
    (tmp_path / "q.jsonl").write_text('{"prompt": "a", "answer": "b"}\n')
    (tmp_path / "latin1.yaml").write_bytes(
        b"kind: generate\ndata: q.jsonl\nprompt: '\xe9 {prompt}'\n"
    )
    (tmp_path / "broken.yaml").write_text("kind: generate\ndata: q.jsonl\nprompt: [1,\n  x: y\n")
    (tmp_path / "os.yaml").write_text("kind: generate\ndata: q.jsonl\nreader: os:system\n")
    (tmp_path / "big.csv").write_text("prompt,answer\na,b\n" + "x" * 140_000 + ",y\n")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "empty.jsonl").write_text(
        "".join(
            json.dumps({"id": f"q{i}", "prompt": "p", "answer": "!!!" if i == 2 else "a"}) + "\n"
            for i in range(4)
        )
    )
    rows = {
        "latin1.yaml": "task file latin1.yaml is not UTF-8 text (byte 0xe9 at offset 38)",
        "broken.yaml": "task file broken.yaml is not valid YAML at line 5, column 1",
        "os.yaml": "reader 'os:system' is not a task reader",
        "big.csv": "big.csv line 3: field larger than field limit (131072); CSV cells are read "
        "up to 131,072 characters",
        "deep.json": "deep.json: JSON nested too deeply to read",
        "empty.jsonl": "empty.jsonl record 2 (id q2): answer '!!!' has no words",  # docs/tasks.md
    }
    ran = parallel({k: (tmp_path, ("eval", tiny_dir, "--task", k, "--dry-run")) for k in rows})
    for k, says in rows.items():
        assert says in one_line(ran[k]), k


def test_the_wrong_kind_message_names_the_option_only(tmp_path, tiny_dir):  # noqa: F811
    res = lk(
        "reduce",
        tiny_dir,
        "--lname",
        "fc_in",
        "--lnum",
        "-1",
        "--rho",
        "0.1",
        "--bandwidth",
        "median",
        "--out",
        "x",
        cwd=tmp_path,
    )
    assert one_line(res) == (
        "laserkit: error: --bandwidth median applies to vendi-score, not to rank-reduction"
    )
    assert not (tmp_path / "x").exists()


# -- in-process: the identity value, old runs, regular expressions --------------------------


def test_an_old_run_without_fingerprints_resumes_with_no_new_trial_and_records_them(tmp_path):
    from test_search import grid_cfg, run_grid, store_at

    from laserkit.search import Context, run

    model = make_tiny("llama")
    cfg = grid_cfg(model, layers=(11,), rhos=(0.5,))
    first = run_grid(tmp_path, cfg, model)
    store = store_at(tmp_path)
    fp = store.identity().fingerprints
    assert fp.weights and fp.data  # recorded by the run
    store.study.set_user_attr("fingerprints", None)  # as a run made before fingerprints
    n = len(store.study.trials)
    again = run(store_at(tmp_path, cfg, resume=True), ctx=Context(cfg, model))
    store = store_at(tmp_path)
    assert len(store.study.trials) == n and again == first  # no new trial
    assert store.identity().fingerprints == fp  # recorded on the first resume
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.add_(1e-3)  # another model now
    with pytest.raises(LaserkitError, match="the model's weights"):
        run(store_at(tmp_path), ctx=Context(cfg, model))


def test_weights_fingerprint_agrees_across_dtypes_and_sees_one_changed_value():
    from laserkit.core.fingerprint import weights_fingerprint

    model = make_tiny("llama")
    fp = weights_fingerprint(model)
    assert weights_fingerprint(make_tiny("llama").to(torch.bfloat16)) == fp
    with torch.no_grad():
        model.model.layers[1].self_attn.q_proj.weight[3, 5] += 0.01
    assert weights_fingerprint(model) != fp


def test_a_catastrophic_regular_expression_names_its_example_in_bounded_time():
    from laserkit.tasks.matching import judge

    assert judge("a" * 5000, ("(.+)+\x00",), "regex") == {"correct": False}  # the issue's
    start = time.monotonic()
    with pytest.raises(
        LaserkitError, match="t example 7: regular expression '\\(a\\|aa\\)\\+\\$' took over 1 s"
    ):
        judge("a" * 60 + "b", ("(a|aa)+$",), "regex", "t example 7")
    assert time.monotonic() - start < 30


def test_all_pairs_needs_each_key_with_its_value():
    """FanOutQA-style dict answers: all_parts ignores the keys (any text with "right" and
    "left" passes); all_pairs needs each key with one of its values in one clause."""
    from laserkit.tasks.matching import check_answers, continuations, judge

    gold = ({"Alice": "right", "Bob": "left", "Carol": ["left", "port"]},)
    check_answers(gold, "all_pairs", "t example 1")
    swapped = "Alice: left, Bob: right; Carol: port."
    assert judge(swapped, gold, "all_parts")["correct"]  # the flaw the issue shows
    assert judge(swapped, gold, "all_pairs") == {
        "correct": False,
        "parts_found": [False, False, True],
    }
    assert judge("Alice: right\nBob went left. Carol: left", gold, "all_pairs") == {
        "correct": True,
        "parts_found": [True, True, True],
    }
    assert continuations(gold, "all_pairs") == ["Alice: right, Bob: left, Carol: left"]
    with pytest.raises(LaserkitError, match="needs a non-empty dict answer"):
        check_answers(("right",), "all_pairs", "t example 2")


def test_chat_template_model_without_one_says_it_falls_back_to_chatml(tmp_path, tiny_dir):  # noqa: F811
    plain = tmp_path / "plain"
    shutil.copytree(tiny_dir, plain)
    cfg = json.loads((plain / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(cfg))
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    (tmp_path / "q.jsonl").write_text('{"prompt": "Capital of France?", "answer": "Paris"}\n')
    (tmp_path / "t.yaml").write_text("kind: generate\ndata: q.jsonl\nchat_template: model\n")
    ran = parallel(
        {
            "plain": (tmp_path, ("eval", plain, "--task", "t.yaml", "--dry-run")),
            "own": (tmp_path, ("eval", tiny_dir, "--task", "t.yaml", "--dry-run")),
        }
    )
    assert ran["plain"].returncode == 0, ran["plain"].stderr[-2000:]
    notes = [ln for ln in ran["plain"].stderr.splitlines() if "falls back to ChatML" in ln]
    assert len(notes) == 1 and "<|im_start|>user\nCapital of France?" in ran["plain"].stdout
    assert "falls back" not in ran["own"].stderr and ran["own"].returncode == 0
