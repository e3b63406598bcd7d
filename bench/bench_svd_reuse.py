"""SVD reuse: the paper's 7 ρ on one matrix through one cached factorization (what `search`
does) against 7 separate decompositions (what the reference does), on the default model's last
fc_in and fc_out. Same weights out (asserted bit for bit).

Run: .venv/bin/python bench/bench_svd_reuse.py
"""

from __future__ import annotations

import datetime
import time

import torch

from laserkit import Editor, FactorCache, Intervention, load

RHOS = (0.9, 0.8, 0.6, 0.2, 0.1, 0.05, 0.01)


def sweep(editor_for, lname: str) -> tuple[float, list[torch.Tensor]]:
    """Apply every ρ in turn (restoring between), timing it; returns the edited weights."""
    out = []
    t = time.perf_counter()
    for rho in RHOS:
        ed = editor_for()
        ed.apply(lname, -1, Intervention(rho=rho))
        (target,) = ed.targets(lname, -1)
        out.append(ed.read(target))
        ed.restore()
    return time.perf_counter() - t, out


def main() -> None:
    model = load("default", dtype="float32", device="cpu").model
    Editor(model).apply("fc_in", 0, Intervention(rho=0.5))  # warm-up of LAPACK
    for lname in ("fc_in", "fc_out"):
        shared = Editor(model, cache=FactorCache())
        t_reuse, reused = sweep(lambda shared=shared: shared, lname)
        t_each, separate = sweep(lambda: Editor(model, cache=FactorCache()), lname)
        assert all(torch.equal(a, b) for a, b in zip(reused, separate, strict=True))
        assert (shared.cache.misses, shared.cache.hits) == (1, len(RHOS) - 1)
        print(
            f"| {datetime.date.today()} | 2-core CPU | {lname} (layer -1), 7 ρ | separate "
            f"{t_each:.2f} s | reused {t_reuse:.2f} s | ×{t_each / t_reuse:.1f} | equal |"
        )


if __name__ == "__main__":
    main()
