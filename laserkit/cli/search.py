"""`laserkit search`, `greedy`, `compose`, `report`, `apply` and `demo` (the main job)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import app
from .common import (
    DeviceOpt,
    DtypeOpt,
    console,
    load_with_status,
    on_interrupt,
    on_interrupt_publishing,
)
from .reduce import BANDWIDTH_HELP

TaskOpt = typer.Option(None, "--task", "--score", help="task to score: fever, bbh-epistemic, "
                       "truthfulqa, perplexity (with --data), dpo-semantic, or a task file")
DataOpt = typer.Option(None, "--data", help="data file for the task (e.g. text for perplexity)")
LimitOpt = typer.Option(None, "--limit", help="use only the first N examples (before the split)")
RunDirOpt = typer.Option(None, "--run-dir", "-o", help="where the run lives (default runs/"
                         "<command>-<task>)")
ResumeOpt = typer.Option(False, "--resume", help="continue the run in --run-dir (after a crash "
                         "or Ctrl-C) or join it as another worker")
StorageOpt = typer.Option(None, "--storage", help="trial store URL (default sqlite:///RUN_DIR/"
                          "trials.db; postgresql://... for workers on several machines)")
BatchOpt = typer.Option(16, "--batch-size", help="examples per forward pass")
SeedOpt = typer.Option(None, "--seed", help="shuffle the examples with this seed before the "
                       "split (default: none, the paper's first-20%-validation split)")
NoCacheOpt = typer.Option(False, "--no-prefix-cache", help="recompute layers before ℓ in every "
                          "trial (results are the same; slower)")
CacheGbOpt = typer.Option(1.0, "--cache-gb", help="memory for cached hidden states; beyond it "
                          "batches are recomputed")
NoSaveOpt = typer.Option(False, "--no-save", help="do not save the chosen model into "
                         "RUN_DIR/best-model")


def _floats(text: str | None) -> list[float] | None:
    from ..errors import LaserkitError

    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LaserkitError(f"cannot read {text!r}: give comma-separated numbers") from None


def _rhos(rho: str | None, rate: str | None, default: tuple[float, ...]) -> list[float]:
    from ..errors import LaserkitError
    from ..interventions import rho_from_rate

    if rho is not None and rate is not None:
        raise LaserkitError("give --rho or --rate, not both")
    if rate is not None:
        return [rho_from_rate(r) for r in _floats(rate)]
    return _floats(rho) or list(default)


def _objective(task: str | None, data: str | None, limit: int | None, batch_size: int,
               seed: int | None) -> dict:
    from ..errors import LaserkitError

    if not task:
        raise LaserkitError("say what to score with --task (e.g. fever, bbh-epistemic, "
                            "perplexity --data FILE)")
    return {"type": "task", "task": task, "data": data, "limit": limit,
            "batch_size": batch_size, "seed": seed}


def _run_dir(run_dir: Path | None, command: str, task: str | None,
             resume: bool | None = None) -> Path:
    """The run directory, checked before any model is loaded (``resume`` None: no check)."""
    from ..search.runner import check_run_dir

    out = run_dir or Path("runs") / f"{command}-{Path(task or 'run').stem}"
    if resume is not None:
        check_run_dir(out, resume)
    return out


def _trials_kept(run_dir: Path, again: str) -> None:
    on_interrupt(f"the finished trials are kept in {run_dir}; {again}")


class _Bar:
    """A rich progress bar fed by the engine's (done, total) callback."""

    def __init__(self, label: str) -> None:
        self.progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console,
                                 disable=not console.is_terminal)  # no bar litter in logs
        self.task = self.progress.add_task(label, total=None)

    def __enter__(self) -> _Bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, done: int, total: int) -> None:
        self.progress.update(self.task, completed=done, total=max(total, done) or None)


def _print_result(result: dict, run_dir: Path) -> None:
    from ..search.report import headline_rows

    metric = result["base"]["test"].get("metric", "score")
    table = Table(title=f"{result['command']}: base → best (chosen on validation, reported on "
                        "test)")
    table.add_column("model", overflow="fold")
    for col in (f"val {metric}", "val log-loss", f"test {metric}", "test log-loss"):
        table.add_column(col)
    for name, val, test in headline_rows(result):
        table.add_row(name, *(_num(d.get(k)) for d in (val, test) for k in ("score", "log_loss")))
    console.print(table)
    from ..search.significance import lines  # noqa: PLC0415

    for line in lines(result):
        console.print(line)
    console.print(f"run directory: {run_dir}")


def _num(v: object) -> str:
    return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _finish(result: dict, run_dir: Path, loaded, no_save: bool) -> None:
    from ..search.report import write_report

    _print_result(result, run_dir)
    report = write_report(run_dir)
    console.print(f"report: {report}")
    if not no_save:
        on_interrupt(f"the finished run is kept in {run_dir}; save its model with `laserkit "
                     f"apply {run_dir} --out DIR`")
        out = save_chosen(run_dir, run_dir / "best-model", loaded=loaded, force=True)
        console.print(f"saved the chosen model to {out}")


def save_chosen(run_dir: Path, out: Path, loaded=None, force: bool = False,
                dtype: str = "auto", device: str = "auto") -> Path:
    """Rebuild the run's chosen model (base + chosen edits) and save it as an HF directory."""
    from ..edit import Editor
    from ..saving import save
    from ..search.report import load_result
    from ..search.runner import read_config
    from ..search.trial import apply_edits

    cfg = read_config(run_dir)
    result = load_result(run_dir)
    if loaded is None:
        loaded = load_with_status(cfg["model"], cfg.get("dtype", dtype), device)
    editor = Editor(loaded.model)
    try:
        apply_edits(editor, result["chosen"]["edits"])
        extra = {"search": {"run_dir": str(run_dir), "command": result["command"],
                            "chosen": result["chosen"]["label"],
                            "base_test": result["base"]["test"],
                            "best_test": result["best"]["test"]}}
        with console.status(f"saving to {out} ..."):
            return save(loaded.model, loaded.tokenizer, out, editor.records, base=cfg["model"],
                        overwrite=force, extra_record=extra)
    finally:
        editor.restore()


def _context(cfg: dict, loaded, no_cache: bool):
    from ..search.runner import Context

    return Context(cfg, loaded.model, loaded.tokenizer, prefix_cache=not no_cache)


@app.command()
def search(
    model: str = typer.Argument("default", help="hub id, model directory, .gguf, or 'default'"),
    task: str = TaskOpt,
    data: str = DataOpt,
    limit: int = LimitOpt,
    lname: str = typer.Option("fc_in,fc_out", "--lname", help="matrix types τ of the grid, "
                              "comma-separated (each is its own grid axis value)"),
    lnum: str = typer.Option("all", "--lnum", help="layers ℓ of the grid: all, 20-31, -4:, 3,5"),
    rho: str = typer.Option(None, "--rho", help="ρ values, comma-separated (default the paper's "
                            "0.9,0.8,0.6,0.2,0.1,0.05,0.01)"),
    rate: str = typer.Option(None, "--rate", help="reference-CLI rates instead of --rho"),
    intervention: str = typer.Option("rank-reduction", "--intervention",
                                     help="rank-reduction or vendi-score"),
    use_quality: bool = typer.Option(False, "--use-quality", help="vendi-score: quality-weighted"),
    min_diversity: bool = typer.Option(False, "--min-diversity", help="vendi-score: minimise"),
    bandwidth: str = typer.Option("1", "--bandwidth", help=BANDWIDTH_HELP),
    halving: int = typer.Option(None, "--halving", help="successive halving with this factor η: "
                                "every trial on the first 1/η of validation, the best 1/η on "
                                "all of it (off by default: the paper's protocol is exact)"),
    workers: int = typer.Option(1, "--workers", help="worker processes on this machine (one per "
                                "GPU when there are GPUs)"),
    run_dir: Path = RunDirOpt,
    resume: bool = ResumeOpt,
    storage: str = StorageOpt,
    batch_size: int = BatchOpt,
    seed: int = SeedOpt,
    no_prefix_cache: bool = NoCacheOpt,
    cache_gb: float = CacheGbOpt,
    no_save: bool = NoSaveOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
) -> None:
    """The paper's grid search: every (τ, ℓ, ρ) on validation, base and best on test."""
    from ..edit import Editor
    from ..errors import LaserkitError
    from ..interventions import Intervention
    from ..search.grid import DEFAULT_RHOS, grid_edits
    from ..search.runner import run_grid, search_config
    from ..search.trial import check_edits
    from ..targets import model_layout, parse_layers

    if intervention not in ("rank-reduction", "vendi-score"):
        raise LaserkitError(f"search grids over ρ: use --intervention rank-reduction or "
                            f"vendi-score (not {intervention}; mp-threshold is `laserkit greedy`)")
    run_dir = _run_dir(run_dir, "search", task, resume)
    iv = Intervention(kind=intervention, rho=1.0, use_quality=use_quality,
                      min_diversity=min_diversity, bandwidth=bandwidth)
    loaded = load_with_status(model, dtype, device)
    layers = parse_layers(lnum, model_layout(loaded.model).num_layers)
    lnames = [x.strip() for x in lname.split(",") if x.strip()]
    edits = grid_edits(lnames, layers, _rhos(rho, rate, DEFAULT_RHOS), iv)
    check_edits(Editor(loaded.model), [e for es in edits for e in es])  # fail before any trial
    cfg = search_config(model, _objective(task, data, limit, batch_size, seed), edits,
                        intervention=iv.to_dict(), halving=halving, seed=seed or 0, dtype=dtype,
                        storage=storage, prefix_cache=not no_prefix_cache,
                        cache_bytes=int(cache_gb * (1 << 30)),
                        grid={"lnames": lnames, "layers": layers})
    _trials_kept(run_dir, "continue with the same command and --resume")
    with _Bar(f"search {run_dir}") as bar:
        result = run_grid(run_dir, cfg, resume=resume, workers=workers, device=device,
                          ctx=None if workers > 1 else _context(cfg, loaded, no_prefix_cache),
                          progress=bar)
    _finish(result, run_dir, loaded, no_save)


@app.command()
def greedy(
    model: str = typer.Argument("default", help="hub id, model directory, .gguf, or 'default'"),
    task: str = TaskOpt,
    data: str = DataOpt,
    limit: int = LimitOpt,
    candidates: int = typer.Option(15, "--candidates", help="k: the k lowest-SNR matrices"),
    types: str = typer.Option("mlp,attn", "--types", help="module types the candidates come "
                              "from (laserRMT: mlp gate/up/down and attention q/k/v/o)"),
    run_dir: Path = RunDirOpt,
    resume: bool = ResumeOpt,
    storage: str = StorageOpt,
    batch_size: int = BatchOpt,
    seed: int = SeedOpt,
    no_prefix_cache: bool = NoCacheOpt,
    no_save: bool = NoSaveOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
) -> None:
    """laserRMT: MP-threshold the k lowest-SNR matrices one by one, keep those that help."""
    from ..scan import lowest_snr, scan
    from ..search.greedy import candidate_edits, greedy_config, run_greedy

    run_dir = _run_dir(run_dir, "greedy", task, resume)
    objective = _objective(task, data, limit, batch_size, seed)
    loaded = load_with_status(model, dtype, device)
    on_interrupt(f"the scan's finished matrices are kept in {run_dir}/scan; run the command "
                 "again with --resume to continue")
    scanned = scan(loaded.path, run_dir / "scan", types=types, device=device, progress=True,
                   plots=False)
    cands = candidate_edits(lowest_snr(scanned, candidates, types))
    cfg = greedy_config(model, objective, cands, dtype=dtype, storage=storage,
                        prefix_cache=not no_prefix_cache, seed=seed or 0)
    _trials_kept(run_dir, "continue with the same command and --resume")
    with _Bar(f"greedy {run_dir}") as bar:
        result = run_greedy(run_dir, cfg, _context(cfg, loaded, no_prefix_cache), resume=resume,
                            progress=bar)
    _finish(result, run_dir, loaded, no_save)


@app.command()
def compose(
    model: str = typer.Argument("default", help="hub id, model directory, .gguf, or 'default'"),
    task: str = TaskOpt,
    data: str = DataOpt,
    limit: int = LimitOpt,
    lname: str = typer.Option("fc_in,fc_out", "--lname", help="matrix types tried at each layer"),
    lnum: str = typer.Option("all", "--lnum", help="layers to stack, from the last one down"),
    rho: str = typer.Option("0.1,0.05,0.01", "--rho", help="ρ values tried at each layer"),
    intervention: str = typer.Option("rank-reduction", "--intervention"),
    bandwidth: str = typer.Option("1", "--bandwidth", help=BANDWIDTH_HELP),
    run_dir: Path = RunDirOpt,
    resume: bool = ResumeOpt,
    storage: str = StorageOpt,
    batch_size: int = BatchOpt,
    seed: int = SeedOpt,
    no_prefix_cache: bool = NoCacheOpt,
    no_save: bool = NoSaveOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
) -> None:
    """Stack reductions from the last layer down while validation accuracy does not drop."""
    from ..interventions import Intervention
    from ..search.compose import compose_config, run_compose
    from ..targets import model_layout, parse_layers

    run_dir = _run_dir(run_dir, "compose", task, resume)
    objective = _objective(task, data, limit, batch_size, seed)
    loaded = load_with_status(model, dtype, device)
    layers = parse_layers(lnum, model_layout(loaded.model).num_layers)
    lnames = [x.strip() for x in lname.split(",") if x.strip()]
    iv = Intervention(kind=intervention, rho=1.0, bandwidth=bandwidth)
    cfg = compose_config(model, objective, lnames, layers, _rhos(rho, None, ()), iv.to_dict(),
                         dtype=dtype, storage=storage, prefix_cache=not no_prefix_cache,
                         seed=seed or 0)
    _trials_kept(run_dir, "continue with the same command and --resume")
    with _Bar(f"compose {run_dir}") as bar:
        result = run_compose(run_dir, cfg, _context(cfg, loaded, no_prefix_cache),
                             resume=resume, progress=bar)
    _finish(result, run_dir, loaded, no_save)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a finished run directory")) -> None:
    """Write RUN_DIR/report/report.md with tables and plots (heatmaps, ρ curves, steps)."""
    from ..search.report import load_result, write_report

    path = write_report(run_dir)
    _print_result(load_result(run_dir), run_dir)
    console.print(f"report: {path}")


@app.command("apply")
def apply_cmd(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    out: Path = typer.Option(..., "--out", help="where to save the chosen model"),
    force: bool = typer.Option(False, "--force", help="replace --out if it exists"),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
) -> None:
    """Rebuild the run's chosen model (base model + chosen interventions) and save it: out of
    core for a local checkpoint (only the edited tensors are read); --out FILE.gguf writes GGUF."""
    from ..fileio import check_out_target
    from ..outofcore import apply_run

    check_out_target(out, overwrite=force)  # before loading the model
    on_interrupt_publishing(out, "the chosen model", "run the command again to save it")
    path = apply_run(run_dir, out, overwrite=force, dtype=dtype, device=device)
    if path is None:
        path = save_chosen(run_dir, out, force=force, dtype=dtype, device=device)
    console.print(f"saved the chosen model to {path}")


DEMO = {"task": "fever-bigbench", "limit": 300, "lname": "fc_in,fc_out", "lnum": "-6:",
        "rho": "0.2,0.1,0.05,0.01"}


@app.command()
def demo(
    run_dir: Path = typer.Option(Path("runs/demo"), "--run-dir", "-o"),
    device: str = DeviceOpt,
) -> None:
    """The main job in a few minutes: a small LASER search on the packaged SmolLM2 and BIG-bench's
    FEVER claims (first 300: 60 validation, 240 test; fc_in/fc_out × last 6 layers × ρ 0.2,
    0.1, 0.05, 0.01: 48 trials), then the best model saved to RUN_DIR/best-model and the report
    written, with the paired significance of base → best on test and the best-of-48 check. No
    grid tried on the offline tasks gave SmolLM2 a significant gain (README: what was tried), so
    the demo shows how laserkit reports a gain that is not significant. Run again, it continues
    (or just reprints) the same run."""
    search(model="default", task=DEMO["task"], data=None, limit=DEMO["limit"],
           lname=DEMO["lname"], lnum=DEMO["lnum"], rho=DEMO["rho"], rate=None,
           intervention="rank-reduction", use_quality=False, min_diversity=False, bandwidth="1",
           halving=None,
           workers=1, run_dir=run_dir, resume=True, storage=None, batch_size=16, seed=None,
           no_prefix_cache=False, cache_gb=1.0, no_save=False, dtype="auto", device=device)
