"""`laserkit search`, `greedy`, `compose`, `worker`, `status`, `report`, `apply` and `demo`: parse
the options, call laserkit.search (session, where, outputs), print. What they do is in the
library."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..interventions import Intervention
from . import app
from .bars import Bars
from .common import (
    DeviceOpt,
    DtypeOpt,
    TrustOpt,
    check_model_input,
    check_source_out,
    console,
    load_with_status,
    on_interrupt,
    on_interrupt_publishing,
)
from .options import (
    FROM_OPTIONS,
    PLACEHOLDER_RHO,
    BatchOpt,
    BatchTokensOpt,
    CacheGbOpt,
    DataOpt,
    FinalEvalOpt,
    GraceOpt,
    HeartbeatOpt,
    IncludeOpt,
    LimitOpt,
    MaxNewOpt,
    NoCacheOpt,
    NoSaveOpt,
    ResumeOpt,
    RunDirOpt,
    RunOpt,
    SearchModelArg,
    ShuffleOnlyOpt,
    ShuffleOpt,
    SourceArg,
    StorageOpt,
    TaskOpt,
    WorkersOpt,
    intervention_options,
)
from .output import results


def _num(v: object) -> str:
    return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _print_result(result: dict) -> None:
    from ..search.report import headline_rows
    from ..search.sequential import SAME_TEXT, same_text

    metric = result["base"]["test"].get("metric", "score")
    one = same_text(result)  # one text: decided and reported on it, no held-out test
    how = SAME_TEXT if one else "chosen on validation, reported on test"
    table = Table(
        title=f"{result['command']} ({result.get('strategy', result['command'])}): "
        f"base → best ({how})"
    )
    table.add_column("model", overflow="fold")
    cols = (
        (metric, "log-loss")
        if one
        else (f"val {metric}", "val log-loss", f"test {metric}", "test log-loss")
    )
    for col in cols:
        table.add_column(col)
    for name, val, test in headline_rows(result):
        parts = (test,) if one else (val, test)
        table.add_row(name, *(_num(d.get(k)) for d in parts for k in ("score", "log_loss")))
    results.print(table)
    from ..search.significance import lines

    for line in lines(result):
        results.print(line)


def _run_dir(
    run_dir: Path | None,
    run: str | None,
    command: str,
    task: str | None,
    resume: bool | None = None,
) -> Path:
    """The run directory, checked before any model is loaded (``resume`` None: no check)."""
    from ..search.rundir import check_run_dir

    out = run_dir or Path("runs") / (run or f"{command}-{Path(task or 'run').stem}")
    if resume is not None:
        check_run_dir(out, resume)
    return out


def _check_inputs(model: str, trust_remote_code: bool, workers: int, device: str) -> None:
    """The model's own checks (its code, its tokenizer) and where it goes, before a run is
    created or the model loaded."""
    from ..io.source import ModelSource
    from ..search.session import check_workers

    check_workers(workers, device)
    check_model_input(model, trust_remote_code)
    if ModelSource.parse(model).kind == "dir":
        from .common import require_tokenizer

        require_tokenizer(model)


def _go(
    cfg,
    loaded,
    *,
    run_dir: Path,
    run: str | None,
    storage: str | None,
    resume: bool,
    workers: int,
    device: str,
    no_save: bool,
    final: list | None = None,
) -> None:
    """Start or resume a run, then print its table, write the report, save the chosen model."""
    from ..search import outputs, session
    from ..search.store import public_url

    where = f"the database {public_url(storage)}" if storage else run_dir
    on_interrupt(
        f"the finished trials are kept in {where}; continue with the same command and --resume"
    )
    with Bars() as bars:
        bar = bars.start(f"{cfg.strategy} {run or run_dir}")
        result, store = session.start(
            cfg,
            run_dir=run_dir,
            storage=storage,
            run=run,
            resume=resume,
            workers=workers,
            device=device,
            loaded=loaded,
            progress=bar,
        )
    if result is None:
        from ..search.store import without_password  # a log must not get the password

        console.print(
            f"created run {store.run!r}; work on it with: laserkit worker "
            f"{without_password(storage or store.url)} --run {store.run}"
        )
        return
    _print_result(result)
    if final:
        _final_eval(result, store, final, loaded, run_dir, cfg.objective)
    on_interrupt(
        f"the finished run is kept in {run_dir}; write its report and model with "
        f"`laserkit report {run_dir}` and `laserkit apply {run_dir} --out DIR`"
    )
    with console.status("writing the report and the chosen model ..."):
        paths = outputs.finish(store, run_dir, loaded, save_model=not no_save)
    console.print(f"run {store.run!r} in {run_dir}\nreport: {paths['report']}")
    if "model" in paths:
        console.print(f"saved the chosen model to {paths['model']}")


def _final_eval(result: dict, store, tasks: list, loaded, run_dir: Path, objective) -> None:
    """--final-eval: base and chosen model on other tasks, into result.json and the report."""
    from ..search.final_eval import final_eval
    from ..search.session import write_result

    on_interrupt(
        f"the finished run is kept in {run_dir}; run the command again with --resume "
        "to score the --final-eval tasks"
    )
    with console.status("scoring the base and the chosen model on the --final-eval tasks ..."):
        result["final_eval"] = final_eval(
            tasks,
            loaded,
            result["chosen"]["edits"],
            objective.batch_size,
            objective.batch_tokens,
        )
    store.set_result(result)
    write_result(result, run_dir)
    table = Table(title="other tasks (--final-eval, every example)")
    for col in ("task", "metric", "n", "base", "chosen", "chosen − base [95% CI]"):
        table.add_column(col)
    for name, r in result["final_eval"].items():
        diff = (
            f"{r['diff']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]"
            if "diff" in r
            else "no per-example metric"
        )
        table.add_row(
            name, r["metric"], str(r["n"]), f"{r['base']:.4f}", f"{r['chosen']:.4f}", diff
        )
    console.print(table)


def _iv(iv: Intervention) -> dict:
    """The run's intervention template: the strategy puts each ρ it tries in place of the
    placeholder (also for a kind without ρ, as runs have always stored it)."""
    return {**iv.to_dict(), "rho": PLACEHOLDER_RHO}


@app.command()
@intervention_options(
    ("rank-reduction", "vendi-score"),
    sweep=True,
    why=" (search grids over ρ; mp-threshold is `laserkit greedy`)",
)
def search(
    model: str = SearchModelArg,
    task: str = TaskOpt,
    data: str | None = DataOpt,
    include_path: str = IncludeOpt,
    final_eval: str = FinalEvalOpt,
    limit: int = LimitOpt,
    max_new_tokens: int = MaxNewOpt,
    strategy: str = typer.Option(
        "grid",
        "--strategy",
        help="grid: every (τ, ℓ, ρ) (the paper); "
        "tpe: Bayesian (Optuna TPE) over the same space, --trials of it",
    ),
    trials: int = typer.Option(None, "--trials", help="tpe: how many distinct (τ, ℓ, ρ) to try"),
    batch: int = typer.Option(
        1,
        "--batch",
        help="tpe: proposals per round (set it to the "
        "number of workers to keep them busy; results do not depend on "
        "the workers, only on this)",
    ),
    lname: str = typer.Option(
        "fc_in,fc_out",
        "--lname",
        help="matrix types τ of the grid, comma-separated (each is its own grid axis value)",
    ),
    lnum: str = typer.Option("all", "--lnum", help="layers ℓ of the grid: all, 20-31, -4:, 3,5"),
    rho: str = typer.Option(
        None,
        "--rho",
        help="ρ values, comma-separated (default the paper's 0.9,0.8,0.6,0.2,0.1,0.05,0.01)",
    ),
    rate: str = typer.Option(None, "--rate", help="reference-CLI rates instead of --rho"),
    iv: Intervention = FROM_OPTIONS,
    halving: int = typer.Option(
        None,
        "--halving",
        help="successive halving with this factor η: "
        "every trial on the first 1/η of validation, the best 1/η on "
        "all of it (off by default: the paper's protocol is exact)",
    ),
    workers: int = WorkersOpt,
    run_dir: Path = RunDirOpt,
    run: str = RunOpt,
    resume: bool = ResumeOpt,
    storage: str = StorageOpt,
    batch_size: int = BatchOpt,
    batch_tokens: str = BatchTokensOpt,
    selection: str = typer.Option(
        "laserkit",
        "--selection",
        help="laserkit: the base model "
        "competes and wins ties (an edit must beat it); reference: "
        "the base is never a candidate, the best intervention is "
        "reported as the reference does (docs/search.md)",
    ),
    seed: int = typer.Option(0, "--seed", help="seeds the search: TPE's sampler"),
    shuffle: int = ShuffleOnlyOpt,
    no_prefix_cache: bool = NoCacheOpt,
    cache_gb: float = CacheGbOpt,
    heartbeat: int = HeartbeatOpt,
    grace: int = GraceOpt,
    no_save: bool = NoSaveOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """The paper's grid search (or TPE over its space): (τ, ℓ, ρ) on validation, base and best
    on test."""
    from ..core.errors import LaserkitError
    from ..model.targets import model_layout
    from ..search.config import ObjectiveConfig, RunConfig, cache_bytes
    from ..search.grid import DEFAULT_RHOS

    if strategy not in ("grid", "tpe"):
        raise LaserkitError(
            f"--strategy {strategy}: use grid or tpe (greedy and compose are commands of their own)"
        )
    from ..search.config import SELECTIONS

    if selection not in SELECTIONS:  # before the model is loaded
        raise LaserkitError(f"unknown --selection {selection!r}: use {', '.join(SELECTIONS)}")
    run_dir = _run_dir(run_dir, run, "search", task, resume)
    from ..search.final_eval import check_final_eval
    from ..tasks.kinds.lm_eval import task_source

    finals = check_final_eval(final_eval, include_path)
    data = task_source(task, data, include_path)
    objective = ObjectiveConfig.from_cli(
        task, data, limit, batch_size, shuffle, max_new_tokens, batch_tokens
    )
    _check_inputs(model, trust_remote_code, workers, device)
    loaded = load_with_status(model, dtype, device, trust_remote_code)
    cfg = RunConfig.from_cli(
        strategy,
        model,
        objective,
        num_layers=model_layout(loaded.model).num_layers,
        lname=lname,
        lnum=lnum,
        rho=rho,
        rate=rate,
        default_rhos=DEFAULT_RHOS,
        intervention=_iv(iv),
        halving=halving,
        trials=trials,
        batch=batch,
        seed=seed,
        dtype=dtype,
        prefix_cache=not no_prefix_cache,
        cache_bytes=cache_bytes(cache_gb),
        heartbeat_s=heartbeat,
        grace_s=grace,
        trust_remote_code=trust_remote_code,
        selection=selection,
    )
    _go(
        cfg,
        loaded,
        run_dir=run_dir,
        run=run,
        storage=storage,
        resume=resume,
        workers=workers,
        device=device,
        no_save=no_save,
        final=finals,
    )


@app.command()
@intervention_options(("mp-threshold",))
def greedy(
    model: str = SearchModelArg,
    task: str = TaskOpt,
    data: str | None = DataOpt,
    include_path: str = IncludeOpt,
    final_eval: str = FinalEvalOpt,
    limit: int = LimitOpt,
    max_new_tokens: int = MaxNewOpt,
    candidates: int = typer.Option(15, "--candidates", help="k: the k lowest-SNR matrices"),
    types: str = typer.Option(
        "mlp,attn",
        "--types",
        help="module types the candidates come "
        "from (laserRMT: mlp gate/up/down and attention q/k/v/o)",
    ),
    iv: Intervention = FROM_OPTIONS,
    workers: int = WorkersOpt,
    run_dir: Path = RunDirOpt,
    run: str = RunOpt,
    resume: bool = ResumeOpt,
    storage: str = StorageOpt,
    batch_size: int = BatchOpt,
    batch_tokens: str = BatchTokensOpt,
    shuffle: int = ShuffleOpt,
    no_prefix_cache: bool = NoCacheOpt,
    no_save: bool = NoSaveOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """laserRMT: MP-threshold the k lowest-SNR matrices one by one, keep those that help."""
    from ..search.config import ObjectiveConfig, RunConfig
    from ..search.greedy import scan_candidates

    run_dir = _run_dir(run_dir, run, "greedy", task, resume)
    from ..search.final_eval import check_final_eval
    from ..tasks.kinds.lm_eval import task_source

    finals = check_final_eval(final_eval, include_path)
    data = task_source(task, data, include_path)
    objective = ObjectiveConfig.from_cli(
        task, data, limit, batch_size, shuffle, max_new_tokens, batch_tokens
    )
    _check_inputs(model, trust_remote_code, workers, device)
    loaded = load_with_status(model, dtype, device, trust_remote_code)
    from ..search.catalog import probe_storage

    probe_storage(storage)  # before the scan creates the run directory
    on_interrupt(
        f"the scan's finished matrices are kept in {run_dir}/scan; run the command "
        "again with --resume to continue"
    )
    cands = scan_candidates(loaded.path, run_dir / "scan", candidates, types, device, iv)
    cfg = RunConfig.from_cli(
        "greedy",
        model,
        objective,
        candidates=cands,
        dtype=dtype,
        prefix_cache=not no_prefix_cache,
        trust_remote_code=trust_remote_code,
    )
    _go(
        cfg,
        loaded,
        run_dir=run_dir,
        run=run,
        storage=storage,
        resume=resume,
        workers=workers,
        device=device,
        no_save=no_save,
        final=finals,
    )


@app.command()
@intervention_options(sweep=True)
def compose(
    model: str = SearchModelArg,
    task: str = TaskOpt,
    data: str | None = DataOpt,
    include_path: str = IncludeOpt,
    final_eval: str = FinalEvalOpt,
    limit: int = LimitOpt,
    max_new_tokens: int = MaxNewOpt,
    lname: str = typer.Option("fc_in,fc_out", "--lname", help="matrix types tried at each layer"),
    lnum: str = typer.Option("all", "--lnum", help="layers to stack, from the last one down"),
    rho: str = typer.Option("0.1,0.05,0.01", "--rho", help="ρ values tried at each layer"),
    iv: Intervention = FROM_OPTIONS,
    workers: int = WorkersOpt,
    run_dir: Path = RunDirOpt,
    run: str = RunOpt,
    resume: bool = ResumeOpt,
    storage: str = StorageOpt,
    batch_size: int = BatchOpt,
    batch_tokens: str = BatchTokensOpt,
    shuffle: int = ShuffleOpt,
    no_prefix_cache: bool = NoCacheOpt,
    no_save: bool = NoSaveOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Stack reductions from the last layer down while validation accuracy does not drop."""
    from ..model.targets import model_layout
    from ..search.config import ObjectiveConfig, RunConfig

    run_dir = _run_dir(run_dir, run, "compose", task, resume)
    from ..search.final_eval import check_final_eval
    from ..tasks.kinds.lm_eval import task_source

    finals = check_final_eval(final_eval, include_path)
    data = task_source(task, data, include_path)
    objective = ObjectiveConfig.from_cli(
        task, data, limit, batch_size, shuffle, max_new_tokens, batch_tokens
    )
    _check_inputs(model, trust_remote_code, workers, device)
    loaded = load_with_status(model, dtype, device, trust_remote_code)
    cfg = RunConfig.from_cli(
        "compose",
        model,
        objective,
        num_layers=model_layout(loaded.model).num_layers,
        lname=lname,
        lnum=lnum,
        rho=rho,
        intervention=_iv(iv),
        dtype=dtype,
        prefix_cache=not no_prefix_cache,
        trust_remote_code=trust_remote_code,
    )
    _go(
        cfg,
        loaded,
        run_dir=run_dir,
        run=run,
        storage=storage,
        resume=resume,
        workers=workers,
        device=device,
        no_save=no_save,
        final=finals,
    )


@app.command()
def worker(
    url: str = typer.Argument(
        ..., help="the run's database URL (sqlite:///... or postgresql://...)"
    ),
    run: str = typer.Option(..., "--run", help="the run's name"),
    model: str = typer.Option(
        None,
        "--model",
        help="where the run's model is on this machine, if not at the path the run recorded",
    ),
    threads: int = typer.Option(None, "--threads", help="CPU threads for this worker"),
    device: str = DeviceOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Work on a run that exists in the database (start it with `laserkit search ... --storage
    URL`): takes waiting trials until the run is done. Needs only the URL and the model."""
    from ..search.runner import worker as work

    with Bars() as bars:
        bar = bars.start(f"worker on {run}")
        n = work(
            url,
            run,
            device=device,
            threads=threads,
            model=model,
            progress=bar,
            trust_remote_code=trust_remote_code,
        )
    console.print(f"run {run!r} is done; this worker ran {n} trials")


@app.command()
def status(
    source: str = SourceArg,
    run: str = typer.Option(
        None, "--run", help="the run's name (without it, a URL lists its runs)"
    ),
) -> None:
    """Live progress of a run: trials done / running / waiting, and the best so far."""
    from ..search import session, where
    from ..search.catalog import run_names

    if where.is_url(source) and not run:
        names = run_names(source)
        results.print("runs: " + (", ".join(names) if names else "none"))
        return
    s = session.status(where.open_run(source, run))
    table = Table(title=f"run {s['run']!r}: {s['strategy']} on {s['task']}")
    for col in ("done", "running", "waiting", "failed", "of about"):
        table.add_column(col)
    table.add_row(*(str(s[k]) for k in ("done", "running", "waiting", "failed", "total")))
    results.print(table)
    b = s["best"]
    if b is not None:
        results.print(
            f"best so far ({b['split']}): {b['label']}  accuracy {_num(b['accuracy'])}"
            f"  score {_num(b['score'])}  log-loss {_num(b['log_loss'])}"
        )
    results.print("finished" if s["finished"] else "not finished")


@app.command()
def report(
    source: str = SourceArg,
    run: str = RunOpt,
    out: Path = typer.Option(
        None,
        "--out",
        help="where to write report.md and the plots (default RUN_DIR/report; needed with a URL)",
    ),
) -> None:
    """Write report.md with tables and plots (heatmaps, ρ curves, steps) for a finished run."""
    from ..core.errors import LaserkitError
    from ..search import outputs, session
    from ..search.where import locate, open_run

    where = locate(source, run)
    if out is None:
        if where.run_dir is None:
            raise LaserkitError("with a database URL, say where the report goes with --out DIR")
        out = where.run_dir / "report"
    store = open_run(source, run)
    path = outputs.report(store, out)
    _print_result(session.result_of(store))
    console.print(f"report: {path}")


@app.command("apply")
def apply_cmd(
    run_dir: str = typer.Argument(
        ..., help="a finished run: its directory, or the database URL with --run"
    ),
    out: Path = typer.Option(..., "--out", help="where to save the chosen model"),
    force: bool = typer.Option(False, "--force", help="replace --out if it exists"),
    dtype: str = typer.Option(None, "--dtype", help="default: the run's"),
    device: str = DeviceOpt,
    run: str = RunOpt,
    model: str = typer.Option(
        None,
        "--model",
        help="where the base model is on this machine, if not at the path the run recorded",
    ),
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Rebuild the run's chosen model (base model + chosen interventions) and save it: out of
    core for a local checkpoint (only the edited tensors are read); --out FILE.gguf writes GGUF."""
    from ..core.fileio import check_out_target
    from ..search.outputs import save_chosen
    from ..search.where import open_run

    check_out_target(out, overwrite=force)  # before loading the model
    store = open_run(run_dir, run)
    base = model or store.config.model
    check_model_input(base, trust_remote_code)
    check_source_out(base, out)
    on_interrupt_publishing(out, "the chosen model", "run the command again to save it")
    with console.status(f"saving to {out} ..."):
        path = save_chosen(
            store,
            out,
            force=force,
            dtype=dtype,
            device=device,
            model=model,
            trust_remote_code=trust_remote_code,
        )
    console.print(f"saved the chosen model to {path}")


@app.command()
def demo(
    run_dir: Path = typer.Option(Path("runs/demo"), "--run-dir", "-o"),
    device: str = DeviceOpt,
) -> None:
    """The main job in a few minutes: a small LASER search on the packaged SmolLM2 and BIG-bench's
    FEVER claims (first 300: 60 validation, 240 test; fc_in/fc_out × last 6 layers × ρ 0.2,
    0.1, 0.05, 0.01: 48 trials), then the best model saved to RUN_DIR/best-model and the report
    written, with the paired significance of base → best on test and the best-of-48 check. No
    grid tried on the offline tasks gave SmolLM2 a significant gain (see docs/demo.md), so
    the demo shows how laserkit reports a gain that is not significant. Run again, it continues
    (or just reprints) the same run."""
    from ..model.targets import model_layout
    from ..search.demo import demo_config

    loaded = load_with_status("default", "auto", device)
    cfg = demo_config(model_layout(loaded.model).num_layers)
    _go(
        cfg,
        loaded,
        run_dir=run_dir,
        run=None,
        storage=None,
        resume=True,
        workers=1,
        device=device,
        no_save=False,
    )
