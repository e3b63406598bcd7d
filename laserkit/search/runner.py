"""Workers: load the model once, then take trials from the store until the run is done.

``python -m laserkit.search.runner RUN_DIR [--device D]`` is one worker; ``laserkit search
--workers N`` starts N of them, and a worker started on another machine with the same store URL
joins the same run. Everything a worker needs is in ``RUN_DIR/run.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..edit import Editor, FactorCache
from ..errors import LaserkitError
from ..saving import atomic_write_text
from ..targets import model_layout
from . import trial
from .grid import GridPlan
from .objective import Objective, Scored, build_objective
from .prefix_cache import PrefixCache
from .store import Result, TrialStore

CONFIG = "run.json"
# Fields that define what a run computes; a resume must agree on all of them.
IDENTITY = ("command", "model", "objective", "grid", "intervention", "halving", "dtype", "seed",
            "candidates", "compose")


def write_config(run_dir: Path, cfg: dict, resume: bool) -> dict:
    """Create run.json, or on resume check the new config against it; returns the run's config."""
    path = Path(run_dir) / CONFIG
    if path.exists():
        old = json.loads(path.read_text())
        if not resume:
            raise LaserkitError(f"{run_dir} already holds a run; add --resume to continue it, or "
                                "choose another --run-dir")
        diff = [k for k in IDENTITY if _norm(old.get(k)) != _norm(cfg.get(k))]
        if diff:
            raise LaserkitError(f"--resume: this command differs from the run in {run_dir} in "
                                f"{', '.join(diff)}; repeat the original options")
        return old
    atomic_write_text(path, json.dumps(cfg, indent=2) + "\n")
    return cfg


# What a run directory may hold besides run.json: a run interrupted before run.json was written
# (greedy scans first) is continued, anything else is someone else's directory.
RUN_FILES = {CONFIG, "scan", "trials", "trials.db", "trials.db-journal", "trials.db-wal",
             "trials.db-shm", "result.json", "report", "best-model"}


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse, before any work, a --run-dir that is a file, holds something else, or holds a run
    that --resume was not asked to continue."""
    from ..fileio import check_writable_parent

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise LaserkitError(f"--run-dir {run_dir} is an existing file, not a directory")
    check_writable_parent(run_dir, "--run-dir")
    if not run_dir.is_dir():
        return
    if (run_dir / CONFIG).exists():
        if not resume:
            raise LaserkitError(f"{run_dir} already holds a run; add --resume to continue it, or "
                                "choose another --run-dir")
        return
    other = sorted(p.name for p in run_dir.iterdir()
                   if p.name not in RUN_FILES and not p.name.startswith("."))
    if other:
        raise LaserkitError(f"--run-dir {run_dir} holds other files ({', '.join(other[:3])}) and "
                            "no laserkit run; choose a new or empty directory")


def read_config(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise LaserkitError(f"{run_dir} is not a laserkit run directory (no {CONFIG})")
    return json.loads(path.read_text())


def _norm(x: object) -> object:
    return json.loads(json.dumps(x))


def load_model(cfg: dict, device: str) -> tuple[nn.Module, object | None]:
    """The run's model on ``device``; objectives that need no tokenizer load the model alone."""
    if cfg["objective"].get("type") == "next-token":
        from transformers import AutoModelForCausalLM  # noqa: PLC0415

        model = AutoModelForCausalLM.from_pretrained(cfg["model"], dtype=torch.float32)
        return model.to("cpu" if device == "auto" else device).eval(), None
    from ..loading import load  # noqa: PLC0415

    loaded = load(cfg["model"], dtype=cfg.get("dtype", "auto"), device=device)
    return loaded.model, loaded.tokenizer


class Context:
    """One worker's model, objective and caches: the SVD of each matrix is computed once for all
    ρ (FactorCache), the prefix of each layer once for all trials at that layer (PrefixCache)."""

    def __init__(self, cfg: dict, model: nn.Module, tokenizer: object | None = None,
                 objective: Objective | None = None, prefix_cache: bool | None = None) -> None:
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.layout = model_layout(model)
        self.factors = FactorCache()
        self.objective = objective or build_objective(cfg["objective"], tokenizer)
        use = cfg.get("prefix_cache", True) if prefix_cache is None else prefix_cache
        self.prefix = None
        if use and self.objective.forward_only:
            self.prefix = PrefixCache(model, budget_bytes=int(cfg.get("cache_bytes", 1 << 30)),
                                      spill_dir=cfg.get("spill_dir"), wanted=config_layers(cfg))

    def score(self, spec: dict) -> Scored:
        """Apply the spec's edits, score its split, put the weights back exactly."""
        editor = Editor(self.model, self.layout, cache=self.factors)
        try:
            trial.apply_edits(editor, spec["edits"])
            low = trial.lowest_layer(spec["edits"])
            # validation trials share layers (the base pass fills the cache for all of them);
            # a test pass is one trial, nothing to reuse
            if self.prefix is not None and spec["split"] == "validation":
                with self.prefix.at(low):
                    scored = self.objective.score(self.model, spec["split"], spec["fraction"])
            else:
                scored = self.objective.score(self.model, spec["split"], spec["fraction"])
            scored.summary["edits"] = [
                {k: r.get(k) for k in ("module", "lname", "layer", "rank", "rel_error")}
                for r in editor.records
            ]
            return scored
        finally:
            editor.restore()

    def value(self, scored: Scored) -> float:
        """The number Optuna stores for a trial (the run's selection uses the full summary)."""
        s = scored.summary
        if s.get("accuracy") is not None:
            return float(s["accuracy"])
        return float(s["score"]) * (1 if self.objective.higher_is_better else -1)

    def cached(self, store: TrialStore, spec: dict) -> Result:
        """The stored result of a spec, computing and storing it first if needed (greedy and
        compose run their steps in order; a resumed run replays stored steps for free)."""
        done = store.results()
        if spec["key"] in done:
            return done[spec["key"]]
        scored = self.score(spec)
        return store.add_complete(spec, scored, self.value(scored))


def config_layers(cfg: dict) -> set[int]:
    """Every layer a run's edits touch: the layers whose inputs are worth caching."""
    edits = [e for es in cfg.get("grid", {}).get("edits", []) for e in es]
    edits += cfg.get("candidates") or []
    return {int(e["layer"]) for e in edits} | set(cfg.get("compose", {}).get("layers", []))


def search_config(model: str, objective: dict, edits: list[list[dict]], *,
                  intervention: dict, grid: dict | None = None, halving: int | None = None,
                  seed: int = 0, dtype: str = "auto", storage: str | None = None,
                  prefix_cache: bool = True, cache_bytes: int = 1 << 30,
                  heartbeat_s: int = 5, grace_s: int = 20) -> dict:
    """The run.json of a grid search (what every worker reads). A worker silent for ``grace_s``
    seconds is taken for dead and its trial retried."""
    return {"command": "search", "model": model, "objective": objective,
            "grid": {**(grid or {}), "edits": edits}, "intervention": intervention,
            "halving": halving, "seed": seed, "dtype": dtype, "storage": storage,
            "prefix_cache": prefix_cache, "cache_bytes": cache_bytes,
            "heartbeat_s": heartbeat_s, "grace_s": grace_s}


def plan_for(cfg: dict, higher_is_better: bool = True) -> GridPlan:
    edits = cfg["grid"]["edits"]
    return GridPlan(edits, higher_is_better=higher_is_better, halving=cfg.get("halving"))


def work(run_dir: Path, ctx: Context, store: TrialStore | None = None,
         on_trial: Callable[[dict, Scored], None] | None = None, poll_s: float = 1.0) -> int:
    """Run trials of a grid until none is left for anyone; returns how many this worker ran."""
    store = store or open_store(run_dir, ctx.cfg)
    plan = plan_for(ctx.cfg, ctx.objective.higher_is_better)
    ran = 0
    while True:
        store.fail_stale()
        popped = store.pop()
        if popped is not None:
            try:
                with store.heartbeat(popped):
                    scored = ctx.score(popped.spec)
            except KeyboardInterrupt:
                store.release(popped)  # back in the queue now, not after the grace period
                raise
            except Exception as e:
                store.fail(popped, f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}")
                raise
            store.complete(popped, scored, ctx.value(scored))
            ran += 1
            if on_trial is not None:
                on_trial(popped.spec, scored)
            continue
        if store.running():  # others are busy; their trials come back if they die
            time.sleep(poll_s)
            continue
        specs = plan.next_specs(store.results())
        if specs is None:
            return ran
        store.enqueue(specs)


def open_store(run_dir: Path, cfg: dict) -> TrialStore:
    return TrialStore(run_dir, cfg.get("storage"), heartbeat_s=int(cfg.get("heartbeat_s", 5)),
                      grace_s=int(cfg.get("grace_s", 20)))


def finalize(run_dir: Path, cfg: dict, store: TrialStore) -> dict:
    """Write RUN_DIR/result.json from a finished grid and return it."""
    done = store.results()
    base = next((r for r in done.values() if not r.spec["edits"]), None)
    hib = bool(base.summary.get("higher_is_better", True)) if base else True
    plan = plan_for(cfg, hib)
    if plan.next_specs(done) is not None:
        raise LaserkitError(f"the run in {run_dir} is not finished; continue it with --resume")
    result = {"command": "search", "model": cfg["model"], "objective": _public(cfg["objective"]),
              **plan.summarize(done)}
    from .significance import significance  # noqa: PLC0415

    best = plan.best(done)
    base_test = done[plan.base("test")["key"]]
    result["significance"] = significance(
        store, base_test, done[plan.test_spec(best)["key"]] if best.spec["edits"] else base_test,
        done[plan.base("validation")["key"]],
        [done[s["key"]] for s in plan._final(done) if s["edits"]])
    atomic_write_text(Path(run_dir) / "result.json", json.dumps(result, indent=2) + "\n")
    return result


def _public(objective: dict) -> dict:
    """The objective config without bulky inline data (token sequences)."""
    return {k: v for k, v in objective.items() if k != "sequences"}


def run_grid(run_dir: Path, cfg: dict, *, resume: bool = False, workers: int = 1,
             device: str = "auto", ctx: Context | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Run (or continue) a grid search to the end and return its result (result.json).

    ``workers`` > 1 starts that many worker processes on this machine; workers elsewhere can
    join through the same store URL. ``ctx`` runs in this process with an already loaded model.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = write_config(run_dir, cfg, resume)
    store = open_store(run_dir, cfg)
    total = plan_for(cfg).total()

    def tick(*_: object) -> None:
        if progress is not None:
            progress(len(store.results()), total)

    if workers <= 1:
        if ctx is None:
            ctx = Context(cfg, *load_model(cfg, device))
        tick()
        work(run_dir, ctx, store, on_trial=tick)
    else:
        # CPU workers use the thread count one worker would: a matrix product's rounding depends
        # on how many threads split it (e.g. a 117×1536 by 1536×576 product differs in the last
        # bit between 1 and 2 threads), and results must not depend on --workers
        threads = None if torch.cuda.is_available() else torch.get_num_threads()
        procs = spawn(run_dir, workers, worker_devices(workers, device), threads)
        try:
            while any(p.poll() is None for p in procs):
                tick()
                time.sleep(1.0)
        except KeyboardInterrupt:  # workers put their trials back in the queue, then stop
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for p in procs:
                p.wait()
            raise
        bad = [p.returncode for p in procs if p.returncode]
        if bad:
            raise LaserkitError(f"{len(bad)} of {workers} workers failed (exit {bad[0]}); "
                                "fix the cause and continue with --resume")
    tick()
    return finalize(run_dir, cfg, store)


def spawn(run_dir: Path, n: int, devices: list[str], threads: int | None = None,
          extra_env: dict | None = None) -> list[subprocess.Popen]:
    """Start n worker processes on this machine, one per device (round robin)."""
    procs = []
    for i in range(n):
        env = {**os.environ, **(extra_env or {})}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # workers share cores: no spin-waiting
        cmd = [sys.executable, "-m", "laserkit.search.runner", str(run_dir),
               "--device", devices[i % len(devices)]]
        if threads:
            cmd += ["--threads", str(threads)]
        procs.append(subprocess.Popen(cmd, env=env))
    return procs


def worker_devices(n: int, device: str) -> list[str]:
    """cuda:0..N-1 when GPUs are present and the device is auto, else the given device."""
    if device == "auto" and torch.cuda.is_available():
        return [f"cuda:{i % torch.cuda.device_count()}" for i in range(n)]
    return ["cpu" if device == "auto" else device]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="one laserkit search worker")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--storage", default=None, help="store URL (default: the run's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = read_config(args.run_dir)
    if args.storage:
        cfg["storage"] = args.storage
    model, tokenizer = load_model(cfg, args.device)
    work(args.run_dir, Context(cfg, model, tokenizer))


if __name__ == "__main__":
    try:
        main()
    except LaserkitError as e:
        print(f"laserkit worker: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # the parent reports it; its trial is back in the queue
        sys.exit(130)
