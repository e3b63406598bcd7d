"""What each noise-edge estimator keeps: planted-rank matrices, and the default model's weights.

Not a speed bench: it measures how many singular values laserRMT's IQR σ̂ and the Gavish–Donoho
threshold keep where the answer is known (rank r planted under noise), and on real weights. The
table it prints is recorded in docs/methods.md.

    .venv/bin/python bench/bench_mp_estimators.py [--no-model]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from laserkit.spectral.mp import matrix_stats


def planted(m: int, n: int, r: int, strength: float, noise: str, rng) -> np.ndarray:
    """Rank-r signal with singular values ``strength``× the noise bulk's edge, plus noise."""
    u, _ = np.linalg.qr(rng.standard_normal((m, r)))
    v, _ = np.linalg.qr(rng.standard_normal((n, r)))
    if noise == "gaussian":
        z = rng.standard_normal((m, n))
    elif noise == "student-t3":  # heavy tails, variance 3 → scaled to 1
        z = rng.standard_t(3, (m, n)) / math.sqrt(3)
    else:  # "wide": half the noise directions near 0, half near the top (the test's regime)
        k = min(m, n)
        a, _ = np.linalg.qr(rng.standard_normal((m, k)))
        b, _ = np.linalg.qr(rng.standard_normal((n, k)))
        s = np.concatenate([rng.uniform(0.01, 0.05, k // 2), rng.uniform(0.8, 1.0, k - k // 2)])
        z = (a * (s * math.sqrt(max(m, n)) * 2)) @ b.T
    edge = math.sqrt(max(m, n)) * (1 + math.sqrt(min(m, n) / max(m, n)))
    return (u * (strength * edge * np.linspace(1.5, 1.0, r))) @ v.T + z


def planted_table(seeds: int) -> None:
    print(f"planted rank: singular values kept (mean over {seeds} seeds; true rank in column r)")
    print("| shape | noise | r | strength | iqr (laserRMT) | gavish-donoho |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for m, n in [(576, 1536), (400, 200)]:
        for noise in ("gaussian", "student-t3", "wide"):
            for r, strength in [(5, 2.0), (20, 2.0), (20, 1.2)]:
                kept = {"iqr": [], "gavish-donoho": []}
                for seed in range(seeds):
                    w = torch.from_numpy(
                        planted(m, n, r, strength, noise, np.random.default_rng(seed))
                    )
                    s = torch.linalg.svdvals(w)
                    for est in kept:
                        kept[est].append(matrix_stats(s, m, n, estimator=est)["n_above"])
                print(
                    f"| {m}×{n} | {noise} | {r} | {strength:g} | "
                    f"{np.mean(kept['iqr']):.1f} | {np.mean(kept['gavish-donoho']):.1f} |"
                )


def model_table() -> None:
    from laserkit.io.open import default_model_dir, open_checkpoint

    ckpt = open_checkpoint(default_model_dir())
    rows: dict[str, dict[str, list[float]]] = {}
    for name in ckpt.shapes():
        if not name.endswith("proj.weight") or ".layers." not in name:
            continue
        w = ckpt.get(name).to(torch.float64)
        kind = name.split(".")[-2]
        s = torch.linalg.svdvals(w)
        k = min(w.shape)
        for est in ("iqr", "gavish-donoho"):
            kept = matrix_stats(s, *w.shape, estimator=est)["n_above"]
            rows.setdefault(kind, {}).setdefault(est, []).append(kept / k)
    print("\ndefault model (SmolLM2-135M): fraction of singular values kept, mean over layers")
    print("| matrix | iqr (laserRMT) | gavish-donoho |")
    print("| --- | ---: | ---: |")
    for kind, d in sorted(rows.items()):
        print(f"| {kind} | {np.mean(d['iqr']):.3f} | {np.mean(d['gavish-donoho']):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--no-model", action="store_true", help="skip the default model's weights")
    args = ap.parse_args()
    planted_table(args.seeds)
    if not args.no_model:
        model_table()


if __name__ == "__main__":
    main()
