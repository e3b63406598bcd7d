"""The engine: one loop for every strategy. A worker loads the model once, then takes trials from
the store until the strategy says the run is done; whichever worker finds the queue empty asks
the strategy for the next trials and enqueues them (idempotently).

``python -m laserkit.search.runner URL --run NAME`` (or ``laserkit worker URL --run NAME``) is
one worker: it needs only the database URL and the run's name (the config is in the database)
and the model (``--model`` where it lives elsewhere on this machine).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from ..core.errors import LaserkitError, check_interrupt
from ..core.fingerprint import weights_fingerprint
from ..edit.editor import Editor, FactorCache
from ..model.targets import model_layout
from . import trial
from .config import RunConfig
from .identity import Fingerprints
from .objective import Objective, Scored, build_objective
from .prefix_cache import PrefixCache
from .result import RunResult
from .sequential import decision_split
from .store import SECRET_ENV, TrialStore, with_secret, without_password
from .strategy import Strategy, make_strategy
from .trial import Result, objective_value


def load_model(
    cfg: RunConfig, device: str, trust_remote_code: bool = False
) -> tuple[nn.Module, object | None]:
    """The run's model on ``device``; objectives that need no tokenizer load the model alone.
    ``trust_remote_code`` is this process's own permission, never read from the database."""
    if cfg.objective.type == "next-token":
        from transformers import AutoModelForCausalLM  # noqa: PLC0415

        from ..io.source import ModelSource, pick_device, refuse_remote_code  # noqa: PLC0415

        src = ModelSource.parse(cfg.model)
        if src.kind == "dir":
            refuse_remote_code(src.local_path, trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            cfg.model, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
        # PreTrainedModel.to is @functools.wraps(nn.Module.to): typeshed's _Wrapped is not bound
        # as a method, so mypy takes the device for ``self``
        dev = "cpu" if device == "auto" else pick_device(device)  # map: its main device
        return model.to(dev).eval(), None  # type: ignore[arg-type]
    from ..io.load import load  # noqa: PLC0415

    loaded = load(cfg.model, dtype=cfg.dtype, device=device, trust_remote_code=trust_remote_code)
    return loaded.model, loaded.tokenizer


def largest_rho(edits: list[dict]) -> float | None:
    """The largest ρ any edit asks for: the rank the factor cache decomposes to at once, so one
    decomposition serves every ρ of the grid (None: no edit with a ρ)."""
    rhos = [e["intervention"].get("rho") for e in edits]
    rhos = [float(r) for r in rhos if r is not None]
    return max(rhos) if rhos else None


class Context:
    """One worker's model, objective, strategy and caches: the SVD of each matrix is computed
    once for all ρ (FactorCache), the prefix of each layer once for all trials at that layer
    (PrefixCache)."""

    def __init__(
        self,
        cfg: RunConfig,
        model: nn.Module,
        tokenizer: object | None = None,
        objective: Objective | None = None,
        prefix_cache: bool | None = None,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.layout = model_layout(model)
        self.factors = FactorCache()
        self.objective = objective or build_objective(cfg.objective, tokenizer)
        self.strategy: Strategy = make_strategy(
            cfg, self.objective.higher_is_better, decision_split(self.objective)
        )
        self.factors.rho_hint = largest_rho(self.strategy.all_edits())
        use = cfg.prefix_cache if prefix_cache is None else prefix_cache
        self.prefix = None
        if use and self.objective.forward_only:
            self.prefix = PrefixCache(
                model, budget_bytes=cfg.cache_bytes, wanted=self.strategy.layers()
            )
        self._fingerprints: Fingerprints | None = None

    def fingerprints(self) -> Fingerprints:
        """Of this worker's base weights and scored examples (computed once, before any edit):
        what the run's identity checks against the run's own."""
        if self._fingerprints is None:
            data = getattr(self.objective, "fingerprint", lambda: None)()
            self._fingerprints = Fingerprints(weights_fingerprint(self.model), data)
        return self._fingerprints

    def check(self) -> None:
        """Fail before any trial runs on an edit this model cannot take."""
        trial.check_edits(Editor(self.model, self.layout), self.strategy.all_edits())

    def score(self, spec: dict) -> Scored:
        """Apply the spec's edits, score its split, put the weights back exactly."""
        editor = Editor(self.model, self.layout, cache=self.factors)
        try:
            trial.apply_edits(editor, spec["edits"])
            low = trial.lowest_layer(spec["edits"])
            # decision trials share layers (the base pass fills the cache for all of them);
            # a test pass is one trial, nothing to reuse
            if self.prefix is not None and spec["split"] != "test":
                with self.prefix.at(low):
                    scored = self.objective.score(self.model, spec["split"], spec["fraction"])
            else:
                scored = self.objective.score(self.model, spec["split"], spec["fraction"])
            scored.summary["edits"] = [
                {
                    "module": r.module,
                    "lname": r.lname,
                    "layer": r.layer,
                    "rank": r.rank,
                    "rel_error": r.rel_error,
                }
                for r in editor.records
            ]
            return scored
        finally:
            editor.restore()

    def value(self, scored: Scored) -> float:
        """The number Optuna stores for a trial (selection uses the full summary)."""
        return objective_value(scored.summary, self.objective.higher_is_better)


def work(
    store: TrialStore,
    ctx: Context,
    on_trial: Callable[[dict, Scored], None] | None = None,
    poll_s: float = 1.0,
    who: str = "this worker",
) -> int:
    """Run trials until the strategy says the run is done, then store its result; returns how
    many trials this worker ran. A worker whose model or data differ from the run's, or a run
    whose numbers would change under the current definitions, is refused before it takes a
    trial."""
    why = store.config.legacy_conflicts()
    if why and ctx.strategy.next_specs(store.results()) is not None:
        raise LaserkitError(
            f"run {store.run!r} was made under laserkit's older definitions and "
            f"{why[0]}; a trial scored now would mix two definitions in one run "
            "(its results stay readable): start a new run"
        )
    store.check_fingerprints(ctx.fingerprints(), who)
    ran = 0
    while True:
        check_interrupt()  # a Ctrl-C swallowed by a finalizer still stops the run here
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
        specs = ctx.strategy.next_specs(store.results())
        if specs is None:
            finalize(store, ctx.strategy)
            return ran
        if not store.enqueue(specs):
            time.sleep(poll_s)  # enqueued by another worker a moment ago; take it next


def finalize(store: TrialStore, strategy: Strategy | None = None) -> dict:
    """The run's result from its completed trials, stored in the database and returned. Every
    worker that finishes computes the same one, so writing it twice is harmless."""
    done = store.results()
    cfg = store.config
    if strategy is None:
        strategy = make_strategy(cfg, higher_is_better(done), decided_split(done))
    if strategy.next_specs(done) is not None:
        raise LaserkitError(
            f"run {store.run!r} is not finished: start a worker "
            f"(laserkit worker URL --run {store.run}) or --resume it"
        )
    result = RunResult.of(
        strategy.summarize(done),
        command=cfg.command,
        strategy=cfg.strategy,
        run=store.run,
        model=cfg.model,
        objective=cfg.objective.public(),
    )
    from .significance import significance  # noqa: PLC0415

    result.significance = significance(store, result, done)
    store.set_result(result.to_json())
    return result.to_json()


def higher_is_better(done: dict[str, Result]) -> bool:
    base = next((r for r in done.values() if not r.spec["edits"]), None)
    return bool(base.summary.get("higher_is_better", True)) if base else True


def decided_split(done: dict[str, Result]) -> str:
    return "all" if any(r.spec["split"] == "all" for r in done.values()) else "validation"


def run(
    store: TrialStore,
    *,
    workers: int = 1,
    device: str = "auto",
    ctx: Context | None = None,
    model_path: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Run (or continue) the store's run to the end and return its result.

    ``workers`` > 1 starts that many worker processes on this machine; workers elsewhere can
    join through the same URL. ``ctx`` runs in this process with an already loaded model."""
    cfg = store.config
    total = make_strategy(cfg).total()

    def tick(*_: object) -> None:
        if progress is not None:
            progress(store.counts()["done"], total)

    if workers <= 1:
        if ctx is None:
            ctx = Context(
                cfg, *load_model(_with_model(cfg, model_path), device, cfg.trust_remote_code)
            )
        tick()
        work(store, ctx, on_trial=tick)
    else:
        # CPU workers use the thread count one worker would: a matrix product's rounding depends
        # on how many threads split it (e.g. a 117×1536 by 1536×576 product differs in the last
        # bit between 1 and 2 threads), and results must not depend on --workers
        threads = None if torch.cuda.is_available() else torch.get_num_threads()
        procs = spawn(
            store.url,
            store.run,
            workers,
            worker_devices(workers, device),
            threads,
            model=model_path,
            trust_remote_code=cfg.trust_remote_code,
            extra_env=secret_env(store.url),
        )
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
            raise LaserkitError(
                f"{len(bad)} of {workers} workers failed (exit {bad[0]}); "
                "fix the cause and continue with --resume"
            )
    tick()
    return store.result() or finalize(store)


def _with_model(cfg: RunConfig, model: str | None) -> RunConfig:
    return replace(cfg, model=model) if model else cfg


def spawn(
    url: str,
    run_name: str,
    n: int,
    devices: list[str],
    threads: int | None = None,
    model: str | None = None,
    extra_env: dict | None = None,
    cwd: str | None = None,
    trust_remote_code: bool = False,
) -> list[subprocess.Popen]:
    """Start n worker processes on this machine, one per device (round robin)."""
    procs = []
    for i in range(n):
        env = {**os.environ, **(extra_env or {})}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # workers share cores: no spin-waiting
        cmd = [
            sys.executable,
            "-m",
            "laserkit",
            "worker",
            without_password(url),
            "--run",
            run_name,
            "--device",
            devices[i % len(devices)],
        ]
        if threads:
            cmd += ["--threads", str(threads)]
        if model:
            cmd += ["--model", model]
        if trust_remote_code:  # this run's user gave --trust-remote-code themselves
            cmd += ["--trust-remote-code"]
        procs.append(subprocess.Popen(cmd, env=env, cwd=cwd))
    return procs


def secret_env(url: str) -> dict[str, str]:
    """The environment that hands a worker the database password (LASERKIT_STORAGE), which its
    command line, visible to every user of the machine, does not carry."""
    full = with_secret(url)
    return {SECRET_ENV: full} if full != without_password(full) else {}


def worker_devices(n: int, device: str) -> list[str]:
    """cuda:0..N-1 when GPUs are present and the device is auto, else the given device."""
    if device == "auto" and torch.cuda.is_available():
        return [f"cuda:{i % torch.cuda.device_count()}" for i in range(n)]
    return ["cpu" if device == "auto" else device]


def worker(
    url: str,
    run_name: str,
    device: str = "auto",
    threads: int | None = None,
    model: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    trust_remote_code: bool = False,
) -> int:
    """One worker on a run that exists in the database; returns the trials it ran.
    ``progress(done, total)`` is told after each of its trials (done counts every worker's)."""
    if threads:
        torch.set_num_threads(threads)
    store = TrialStore(url, run_name)
    cfg = store.config
    ctx = Context(cfg, *load_model(_with_model(cfg, model), device, trust_remote_code))
    total = ctx.strategy.total()

    def tick(*_: object) -> None:
        if progress is not None:
            progress(store.counts()["done"], total)

    tick()
    return work(store, ctx, on_trial=tick, who="laserkit worker")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="one laserkit search worker")
    ap.add_argument("url", help="the trial store's database URL")
    ap.add_argument("--run", required=True, help="the run's name")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", default=None, help="the model's path on this machine")
    args = ap.parse_args(argv)
    worker(args.url, args.run, args.device, args.threads, args.model)


if __name__ == "__main__":
    try:
        main()
    except LaserkitError as e:
        print(f"laserkit worker: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # the parent reports it; its trial is back in the queue
        sys.exit(130)
