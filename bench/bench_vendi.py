"""Time the exact greedy Vendi selection (laserkit.interventions.vendi) against the plain float64
greedy of tests/direct_vendi.py, in the same process.

Part 1 (`--part model`): the default model's last gate_proj (fc_in, 1536 × 576) at bandwidth 2 and
`median`, r = 5, 20, 57; the direct greedy runs in full and the selections must be equal.
Part 2 (`--part big`): a synthetic m × n matrix (default 16,384 × 4,096, GPT-J's fc_in) whose
rows have the default model's row norms (each row a seeded Gaussian direction scaled to a norm
drawn from that gate_proj's row norms), at r = 40 and 409: time and peak memory of the fast path;
the direct greedy on the first `--slice` rows at a few steps shows how it scales.

Part 3 (`--part bandwidth`, not in `all`): what the bandwidth does on that gate_proj (the figures
of docs/methods.md, "Vendi").

Run: .venv/bin/python bench/bench_vendi.py [--part model|big|bandwidth|all] [--big-r 40,409]
     [--rows 16384] [--cols 4096] [--threads N] [--device cpu|cuda] [--repeat 5]
Both paths share the process, the threads and the machine's load, so the ratio is what to read;
`uptime` is printed with every line because the machine is shared. In part 1 the fast path runs
`--repeat` times (default 5, the cache cleared each time) and the ratio uses the median: one run
of it lasts tens of milliseconds, so a single one moved by tens of percent with the machine's
load; the direct greedy runs once (seconds).
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from direct_vendi import direct_select  # noqa: E402

from laserkit.edit.editor import Editor  # noqa: E402
from laserkit.interventions import vendi  # noqa: E402
from laserkit.interventions.median_distance import pairwise_sq  # noqa: E402
from laserkit.io.load import load  # noqa: E402


def load_avg() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.split("load")[-1]


def gate_proj() -> torch.Tensor:
    ed = Editor(load("default", dtype="float32", device="cpu").model)
    (target,) = ed.targets("fc_in", -1)
    return ed.read(target)


def timed_fast(W: torch.Tensor, r: int, bw, progress: bool = False) -> tuple[list[int], float]:
    vendi._cache.clear()  # time a selection, not a cache hit
    if W.is_cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    idx, _ = vendi.vendi_select(W, r, bandwidth=bw, progress=progress)
    if W.is_cuda:
        torch.cuda.synchronize()
    return idx, time.perf_counter() - t


def part_model(today: str, repeat: int) -> None:
    W = gate_proj()
    timed_fast(W[:200], 3, 2.0)  # warm-up, both paths
    direct_select(W[:50], 2, bandwidth=2.0)
    for bw in (2.0, "median"):
        for r in (5, 20, 57):
            against_direct(today, "gate_proj 1536×576", W, r, bw, repeat)


def against_direct(
    today: str, label: str, W: torch.Tensor, r: int, bw: float | str, repeat: int = 1
) -> None:
    """The fast and the direct greedy on W: selections must be equal; one result row (the fast
    path's median over ``repeat`` runs, with its range)."""
    runs = [timed_fast(W, r, bw) for _ in range(repeat)]
    fast, times = runs[0][0], [t for _, t in runs]
    assert all(idx == fast for idx, _ in runs)
    t = time.perf_counter()
    ref = direct_select(W, r, bandwidth=bw)
    t_dir = time.perf_counter() - t
    assert fast == ref, (bw, r, fast, ref)
    t_fast = statistics.median(times)
    spread = f" ({min(times):.3f}–{max(times):.3f}, {repeat} runs)" if repeat > 1 else ""
    print(
        f"| {today} | {label} | bandwidth {bw} | r={r} | direct {t_dir:.2f} s | fast "
        f"{t_fast:.3f} s{spread} | ×{t_dir / t_fast:.0f} | selections equal | "
        f"load{load_avg().strip()} |",
        flush=True,
    )


def synthetic(rows: int, cols: int, device: str) -> torch.Tensor:
    norms = gate_proj().double().norm(dim=1)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(rows, cols, generator=g, dtype=torch.float32)
    pick = norms[torch.randint(len(norms), (rows,), generator=g)].float()
    X *= (pick / X.norm(dim=1))[:, None]
    return X.to(device)


def part_big(today: str, rs: list[int], rows: int, cols: int, slice_rows: int, device: str) -> None:
    W = synthetic(rows, cols, device)
    for bw in (2.0, "median"):
        for r in rs:
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            _, t_fast = timed_fast(W, r, bw, progress=True)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = (
                f"GPU peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
                if device == "cuda"
                else f"process peak RSS {rss / 2**20:.2f} GiB (was {rss0 / 2**20:.2f} before)"
            )
            print(
                f"| {today} | synthetic {rows}×{cols} | bandwidth {bw} | r={r} | fast "
                f"{t_fast:.1f} s | {peak} | load{load_avg().strip()} |",
                flush=True,
            )
        # the direct greedy on a slice: its cost per run grows like m·r⁴
        S = W[:slice_rows].cpu()
        for r in (5, 10):
            against_direct(today, f"synthetic slice {slice_rows}×{cols}", S, r, bw)


def part_bandwidth() -> None:
    """What the bandwidth does on the default model's last gate_proj: kernel size, how far the
    selection is from the first rows, reconstruction error against first rows and SVD."""
    W = gate_proj().double()
    d2 = pairwise_sq(W)
    iu = torch.triu_indices(len(W), len(W), 1)
    off = d2[iu[0], iu[1]]
    med = float(off.median())
    print(
        f"rows {tuple(W.shape)}; row norms mean {float(W.norm(dim=1).mean()):.3f} "
        f"sd {float(W.norm(dim=1).std()):.3f}; ‖x−y‖² min {float(off.min()):.2f} median "
        f"{med:.2f} max {float(off.max()):.2f}; median σ = {vendi.median_bandwidth(W):.4f}"
    )
    norm = float(W.norm())
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    for bw in (1.0, 2.0, "median"):
        sigma = vendi.resolve_bandwidth(W, bw)
        k = torch.exp(-off / (2 * sigma**2))
        print(
            f"bandwidth {bw} (σ = {sigma:.4f}): off-diagonal kernel median "
            f"{float(k.median()):.2e}, max {float(k.max()):.2e}"
        )
    for r in (5, 57):
        first = float((W - vendi.vendi_reconstruct(W, list(range(r)))).norm()) / norm
        svd = float((W - (U[:, :r] * S[:r]) @ Vh[:r]).norm()) / norm
        print(f"r={r}: rel. error keeping the first {r} rows {first:.4f}, SVD rank {r} {svd:.4f}")
        for bw in (1.0, 2.0, "median"):
            for uq in (False, True):
                vendi._cache.clear()
                idx, _ = vendi.vendi_select(W, r, bandwidth=bw, use_quality=uq)
                err = float((W - vendi.vendi_reconstruct(W, idx)).norm()) / norm
                print(
                    f"  bandwidth {bw}{' +quality' if uq else ''}: rel. error {err:.4f}; "
                    f"{len(set(idx) & set(range(r)))} of the first {r} rows kept; "
                    f"first picks {idx[:6]}"
                )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("model", "big", "bandwidth", "all"), default="all")
    ap.add_argument("--big-r", default="40,409", help="r values for the synthetic matrix")
    ap.add_argument("--rows", type=int, default=16384)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--slice", type=int, default=1024, help="rows of the direct-greedy slice")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=5, help="runs of the fast path in part 1")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    today = datetime.date.today().isoformat()
    print(
        f"# threads {torch.get_num_threads()}, device {args.device}, cpus {os.cpu_count()}",
        flush=True,
    )
    if args.part in ("model", "all"):
        part_model(today, max(1, args.repeat))
    if args.part == "bandwidth":
        part_bandwidth()
    if args.part in ("big", "all"):
        part_big(
            today,
            [int(x) for x in args.big_r.split(",")],
            args.rows,
            args.cols,
            args.slice,
            args.device,
        )


if __name__ == "__main__":
    main()
