"""Time the fast greedy Vendi selection against the direct definition on the default model's last
gate_proj (fc_in, 1536 rows × 576) at r = 1% (5), 20, and 10% (57) of the rank; selections must
be equal.

Run: .venv/bin/python bench/bench_vendi.py [--direct-steps N]
Every r is measured in full by default (about a minute for the direct path at r = 57);
--direct-steps N times only the first N greedy steps of the direct path and extrapolates, and
the output says so (an extrapolation overestimated r = 57 twentyfold once: prefer full runs).
Both paths are warmed up once first (LAPACK and thread-pool start-up is not selection).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from direct_vendi import direct_select  # noqa: E402

from laserkit.edit import Editor  # noqa: E402
from laserkit.interventions.vendi import vendi_select  # noqa: E402
from laserkit.loading import load  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--direct-steps", type=int, default=0, help="0: all steps")
    args = ap.parse_args()
    ed = Editor(load("default", dtype="float32", device="cpu").model)
    (target,) = ed.targets("fc_in", -1)
    W = ed.read(target)
    vendi_select(W, 2)  # warm-up, both paths
    direct_select(W[:50], 2)
    for r in (5, 20, 57):
        t = time.perf_counter()
        fast, _ = vendi_select(W, r)
        t_fast = time.perf_counter() - t
        steps = min(r, args.direct_steps) if args.direct_steps else r
        t = time.perf_counter()
        ref, _ = direct_select(W, r, steps=steps)
        t_dir = time.perf_counter() - t
        assert fast[:steps] == ref, (fast[:steps], ref)
        label = "measured"
        if steps < r:  # work per step grows like (step+1)² (kernel and eigh of a (step+1)² matrix)
            w = sum((s + 1) ** 2 for s in range(r)) / sum((s + 1) ** 2 for s in range(steps))
            t_dir *= w
            label = f"EXTRAPOLATED from the first {steps} of {r} steps"
        print(f"| {datetime.date.today()} | 2-core CPU | {target.module} r={r} | direct "
              f"{t_dir:.2f} s ({label}) | fast {t_fast:.3f} s | ×{t_dir / t_fast:.0f} | "
              f"selections equal ({steps} steps) |")


if __name__ == "__main__":
    main()
