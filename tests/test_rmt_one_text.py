"""laserRMT's perplexity greedy on one text, through the installed command: the decisions and
the final score come from the same text, and the table, result.json, report.md and the
significance lines say so instead of "chosen on validation, reported on test"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_search_cli import tiny_dir  # noqa: F401 - the fixture

from laserkit.search.sequential import SAME_TEXT

LASERKIT = Path(sys.executable).parent / "laserkit"
pytestmark = pytest.mark.usefixtures("one_thread")


def test_greedy_on_one_text_says_decided_and_scored_on_the_same_text(tmp_path, tiny_dir):  # noqa: F811
    text = " ".join(f"Sentence number {i} tells of a river, a hill and a town." for i in range(40))
    (tmp_path / "notes.txt").write_text(text)
    run = tmp_path / "g"
    res = subprocess.run(
        [
            str(LASERKIT),
            "greedy",
            str(tiny_dir),
            "--score",
            "perplexity",
            "--data",
            "notes.txt",
            "--candidates",
            "2",
            "--run-dir",
            str(run),
            "--no-save",
            "--dtype",
            "float32",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(Path.home()),
            "COLUMNS": "400",
            "OMP_NUM_THREADS": "1",
        },
    )
    assert res.returncode == 0, res.stderr
    out = " ".join((res.stdout + res.stderr).split())  # results on stdout, messages on stderr
    assert SAME_TEXT in out and "reported on test" not in out
    assert (
        "same text as the decisions (not held out): significance unavailable: 1 example "
        "(one text): nothing to resample"
        in out
        and "significant" not in out
    )
    result = json.loads((run / "result.json").read_text())
    assert result["decided_on"] == "all" and result["held_out_test"] is False
    assert result["note"] == SAME_TEXT
    base = result["base"]["test"]
    assert base == result["base"]["validation"] and base["split"] == "all"
    assert (base["chunking"], base["chunk_length"]) == ("fixed", 128)
    from transformers import AutoTokenizer

    n = len(AutoTokenizer.from_pretrained(tiny_dir)(text)["input_ids"])
    assert base["n_chunks"] == n // 128 >= 2
    report = (run / "report" / "report.md").read_text()
    assert SAME_TEXT in report and "reported on test" not in report
    assert "| model | perplexity (same text) | log-loss | n |" in report
    assert "- same text as the decisions (not held out): significance unavailable" in report
    assert result["significance"]["test"]["unavailable"].startswith("1 example (one text)")
