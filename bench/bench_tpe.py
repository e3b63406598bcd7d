"""What TPE buys: how many trials `search --strategy tpe` needs to find the grid's best (or a
trial inside the best's 95% confidence interval), against the full grid and against random
order, over several seeds.

For each task the full grid is run once on the real model through the engine (the numbers every
strategy would see: a trial's result is a deterministic function of its (τ, ℓ, ρ)). TPE is then
replayed over that table: the same TPE strategy class the engine runs asks for trials and is
answered from the grid's results, so each seed costs no model time and the count is exactly what
a live TPE run would need. Random search is the same replay in a seeded random order.

    .venv/bin/python -W ignore bench/bench_tpe.py \\
        --tasks fever-bigbench,bbh-epistemic-bigbench --limit 150 \\
        --lnum=-4: --rho 0.2,0.1,0.05,0.01 --seeds 10 --store /tmp/laserkit-bench-tpe

The grids are kept in ``--store`` (one SQLite run per task): a second invocation reuses them.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from laserkit import load
from laserkit.interventions import Intervention
from laserkit.model.targets import model_layout, parse_layers
from laserkit.search import Context, ObjectiveConfig, RunConfig, TrialStore, make_strategy, run
from laserkit.search.grid import pick
from laserkit.search.store import default_url
from laserkit.search.trial import Result

CHECKPOINTS = (4, 8, 16)  # budgets at which the best accuracy found so far is reported


def wilson_low(p: float, n: int, z: float = 1.96) -> float:
    """Lower end of the Wilson 95% interval of an accuracy p over n examples."""
    d = 1 + z * z / n
    centre = p + z * z / (2 * n)
    return (centre - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / d


def replay_tpe(cfg: RunConfig, table: dict[str, Result], seed: int) -> list[str]:
    """The validation keys TPE proposes, in order, answered from the grid's table."""
    plan = make_strategy(replace(cfg, strategy="tpe", seed=seed, trials=None, batch=1))
    done = {k: r for k, r in table.items() if not r.spec["edits"]}  # base validation
    order: list[str] = []
    while (specs := plan.next_specs(done)) is not None:
        for s in specs:
            if s["split"] == "validation" and s["edits"]:
                order.append(s["key"])
            done[s["key"]] = table.get(s["key"]) or Result(-1, s, {"accuracy": 0, "score": 0})
    return order


def first_hit(order: list[str], hits: set[str]) -> int:
    return next((i + 1 for i, k in enumerate(order) if k in hits), len(order) + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--tasks", default="fever-bigbench,bbh-epistemic-bigbench")
    ap.add_argument("--limit", type=int, default=150)
    ap.add_argument("--lname", default="fc_in,fc_out")
    ap.add_argument("--lnum", default="-4:")
    ap.add_argument("--rho", default="0.2,0.1,0.05,0.01")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--store", default=None, help="keep the grids' databases here (reused)")
    args = ap.parse_args()

    loaded = load(args.model, dtype="float32", device="cpu")
    layers = parse_layers(args.lnum, model_layout(loaded.model).num_layers)
    for task in args.tasks.split(","):
        cfg = RunConfig(
            strategy="grid",
            model=args.model,
            objective=ObjectiveConfig(task=task, limit=args.limit, batch_size=args.batch_size),
            intervention=Intervention(rho=1.0).to_dict(),
            lnames=args.lname.split(","),
            layers=layers,
            rhos=[float(x) for x in args.rho.split(",")],
            dtype="float32",
        )
        with tempfile.TemporaryDirectory() as tmp:
            where = Path(args.store or tmp)
            where.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            store = TrialStore(default_url(where), f"grid-{task}", create=cfg, resume=True)
            result = run(store, ctx=Context(cfg, loaded.model, loaded.tokenizer))
            seconds = time.perf_counter() - t0
            table = {k: r for k, r in store.results().items() if r.spec["split"] == "validation"}
        grid = [r for r in table.values() if r.spec["edits"]]
        best = pick(grid, True)  # the best intervention (the base model left out)
        acc, n = best.summary["accuracy"], best.summary["n"]
        low = wilson_low(acc, n)
        exact = {
            r.key
            for r in grid
            if (r.summary["accuracy"], r.summary["log_loss"]) == (acc, best.summary["log_loss"])
        }
        within = {r.key for r in grid if r.summary["accuracy"] >= low}
        print(
            f"\n{task}: {cfg.objective.limit} examples; grid of {len(grid)} trials in "
            f"{seconds:.0f} s; base validation "
            f"accuracy {result['base']['validation']['accuracy']:.4f}; best "
            f"{best.key.split('|')[1]} accuracy {acc:.4f} (n={n}), 95% Wilson lower bound "
            f"{low:.4f}: {len(within)} of {len(grid)} trials inside it",
            flush=True,
        )
        rows = {"tpe": [], "random": []}
        acc_at = {"tpe": {k: [] for k in CHECKPOINTS}, "random": {k: [] for k in CHECKPOINTS}}
        accuracy = {r.key: r.summary["accuracy"] for r in grid}
        for seed in range(args.seeds):
            t1 = time.perf_counter()
            order = replay_tpe(cfg, table, seed)
            tpe_s = time.perf_counter() - t1
            assert sorted(order) == sorted(r.key for r in grid)  # TPE covers the space in the end
            shuffled = [r.key for r in grid]
            random.Random(seed).shuffle(shuffled)
            for name, o in (("tpe", order), ("random", shuffled)):
                rows[name].append((first_hit(o, exact), first_hit(o, within)))
                for k in CHECKPOINTS:
                    acc_at[name][k].append(max(accuracy[key] for key in o[:k]))
            print(
                f"  seed {seed}: TPE finds the best at trial {rows['tpe'][-1][0]}, a trial "
                f"inside its CI at {rows['tpe'][-1][1]} (random order: "
                f"{rows['random'][-1][0]} / {rows['random'][-1][1]}); replaying TPE over "
                f"{len(order)} trials took {tpe_s:.1f} s",
                flush=True,
            )
        for name, r in rows.items():
            best_n = [a for a, _ in r]
            ci_n = [b for _, b in r]
            print(
                f"  {name}: trials to the grid's best: median {statistics.median(best_n)}, "
                f"mean {statistics.mean(best_n):.1f}, max {max(best_n)}; to a trial inside "
                f"its CI: median {statistics.median(ci_n)}, mean {statistics.mean(ci_n):.1f}, "
                f"max {max(ci_n)} (full grid: {len(grid)})",
                flush=True,
            )
            print(
                f"  {name}: best validation accuracy after "
                + ", ".join(
                    f"{k} trials: mean {statistics.mean(v):.4f} (min {min(v):.4f})"
                    for k, v in acc_at[name].items()
                )
                + f"; the grid's best: {acc:.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
