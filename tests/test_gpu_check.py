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
    "Vendi r = 4",
    "Vendi r = 8",
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
