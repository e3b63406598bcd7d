"""The top-k route of rank reduction (laserkit/interventions/fast_svd.py) against the full SVD.

For each matrix and ρ, in one process: a fresh edit by the full float32 SVD (LAPACK, what
laserkit did before; the decomposition plus the rank-k product) and by ``rank_reduce`` (top-k
vectors only), their time ratio, and each edit's relative Frobenius distance to the exact
truncation (a float64 SVD; skipped on the synthetic 7B/70B shapes unless --reference, since it
costs minutes there: the fast edit's a-posteriori bound is printed instead, and its distance to
the float32 SVD's edit), and how far the reference's randomized route (``--svd lowrank-niter2``)
lands from the exact edit.

Matrices: the default model's last-layer MLP matrices (real weights), and synthetic matrices in
Mistral-7B's MLP shape (14336×4096) and Llama-70B's (28672×8192, --big) with a power-law
spectrum (column j scaled by (1+j)^-½), like real weights' (no flat bulk).

    .venv/bin/python bench/bench_fast_svd.py [--reference] [--big] [--no-default] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from laserkit.interventions import fast_svd
from laserkit.interventions.rank_reduction import Factors, kept_rank, lowrank_reduce, rank_reduce


def synthetic(m: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(m, n, generator=g) / m**0.5
    return W * (1.0 + torch.arange(n, dtype=torch.float32)) ** -0.5


def default_matrices() -> list[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    from laserkit.io.open import default_model_dir

    folder = default_model_dir()
    out = []
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as sf:
            for name in sf.keys():  # noqa: SIM118 - safe_open has no __iter__
                if ".29.mlp." in name and name.endswith(("gate_proj.weight", "down_proj.weight")):
                    out.append((f"default {name.split('.')[-2]}", sf.get_tensor(name).float()))
    return out


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.double()
    return float((a.double() - b).norm() / b.norm())


def timed(fn):  # noqa: ANN001, ANN201
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def row(label: str, W: torch.Tensor, rho: float, reference: bool) -> None:
    k = kept_rank(*W.shape, rho)
    full, t_full = timed(lambda: Factors.of(W).truncate(k))
    fast, t_fast = timed(lambda: rank_reduce(W, rho))
    f = fast_svd.decompose(W, k)  # again, for the route's name and its bound (not timed)
    bound = f.edit_error_bound(k)
    if reference:
        U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
        exact = (U[:, :k] * S[:k]) @ Vh[:k]
        errs = f"full f32 SVD {rel(full, exact):.2e}, fast {rel(fast, exact):.2e}"
    else:
        errs = f"fast vs full f32 SVD {rel(fast, full):.2e} (fast's bound {bound:.1e})"
    errs += f"; --svd lowrank-niter2 vs fast {rel(lowrank_reduce(W, rho), fast):.1%}"
    print(
        f"| {label} {tuple(W.shape)} | {rho} | {k} | {f.method} | {t_full:.2f} s | "
        f"{t_fast:.2f} s | {t_fast / t_full:.3f} | {errs} |",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--reference",
        action="store_true",
        help="float64 SVD reference on the synthetic shapes too (minutes each)",
    )
    ap.add_argument("--big", action="store_true", help="add the 70B fc_in shape 28672×8192")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-default", action="store_true", help="skip the default model's rows")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        "| matrix | ρ | k | route | full f32 SVD + product | top-k route | ratio | "
        "edit's relative distance |"
    )
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |")
    for label, W in [] if args.no_default else default_matrices():
        for rho in (0.01, 0.1, 0.9):
            row(label, W, rho, True)
    shapes = [("7B fc_in", 14336, 4096)] + ([("70B fc_in", 28672, 8192)] if args.big else [])
    for label, m, n in shapes:
        W = synthetic(m, n)
        row(label, W, 0.01, args.reference)


if __name__ == "__main__":
    main()
