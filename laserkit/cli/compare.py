"""`laserkit compare`: parse the options, call laserkit.search.compare, print the table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .bars import Bars
from .common import (
    DeviceOpt,
    DtypeOpt,
    TrustOpt,
    check_model_input,
    console,
    load_with_status,
    on_interrupt,
)
from .options import (
    BatchOpt,
    DataOpt,
    IncludeOpt,
    LimitOpt,
    ResumeOpt,
    SearchModelArg,
    ShuffleOpt,
    StorageOpt,
    TaskOpt,
)


def print_table(out: dict) -> None:
    from ..search.compare_report import COLUMNS, cells

    metric = out["base"]["test"].get("metric") or "score"
    table = Table(
        title=f"compare on {out['objective'].get('task')}: {metric}, chosen on "
        f"validation (n = {out['base']['validation'].get('n')}), reported on "
        f"test (n = {out['base']['test'].get('n')})"
    )
    for col in COLUMNS:
        table.add_column(col, overflow="fold", no_wrap=col == "method")
    for row in cells(out):
        table.add_row(*row)
    # nine columns do not fit 80: print at least 150 wide (a narrow terminal wraps the lines)
    # rather than let rich crop columns away
    from .output import results  # the table is the result: stdout

    wide = Console(
        file=results.file, width=max(results.width, 150), force_terminal=results.is_terminal
    )
    wide.print(table)
    console.print(f"time: {out['time_measures']}")


@app.command()
def compare(
    model: str = SearchModelArg,
    task: str = TaskOpt,
    methods: str = typer.Option(
        "all",
        "--methods",
        help="comma list of svd, vendi-fork, "
        "vendi-median, vendi-quality, mp-iqr, mp-gavish-donoho (or all)",
    ),
    lname: str = typer.Option("fc_in,fc_out", "--lname", help="grid methods: matrix types τ"),
    lnum: str = typer.Option("all", "--lnum", help="grid methods: layers ℓ (all, 20-31, -4:)"),
    rho: str = typer.Option(
        None,
        "--rho",
        help="grid methods: ρ values (default the paper's 0.9,0.8,0.6,0.2,0.1,0.05,0.01)",
    ),
    candidates: int = typer.Option(
        15, "--candidates", help="greedy methods: the k lowest-SNR matrices"
    ),
    types: str = typer.Option(
        "mlp,attn", "--types", help="greedy methods: module types the candidates come from"
    ),
    data: str | None = DataOpt,
    include_path: str = IncludeOpt,
    limit: int = LimitOpt,
    shuffle: int = ShuffleOpt,
    batch_size: int = BatchOpt,
    run_dir: Path = typer.Option(
        None,
        "--run-dir",
        "-o",
        help="the compare directory (default "
        "runs/compare-<task>): its trial store, scan, compare.json/.md/"
        ".png, one folder per method",
    ),
    storage: str = StorageOpt,
    resume: bool = ResumeOpt,
    workers: int = typer.Option(
        1,
        "--workers",
        help="worker processes per method on this "
        "machine (one with --device map); more join with `laserkit worker URL --run NAME`",
    ),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Every method's own search on the same split, in one trial store, and one table: chosen
    intervention, validation and test score, test change vs base with its 95% CI and McNemar p,
    reconstruction error, trials and time (docs/compare.md)."""
    from ..core.errors import LaserkitError
    from ..search.compare import Space, check_compare_dir, parse_methods
    from ..search.compare import compare as run_compare
    from ..search.config import ObjectiveConfig

    names = parse_methods(methods)  # before anything is loaded or written
    if workers < 1:
        raise LaserkitError("--workers must be at least 1")
    from ..search.session import check_workers
    from ..tasks.kinds.lm_eval import task_source

    check_workers(workers, device)

    data = task_source(task, data, include_path)
    objective = ObjectiveConfig.from_cli(task, data, limit, batch_size, shuffle)
    run_dir = run_dir or Path("runs") / f"compare-{Path(task).stem}"
    check_model_input(model, trust_remote_code)
    check_compare_dir(run_dir, resume)
    loaded = load_with_status(model, dtype, device, trust_remote_code)
    where = f"the database {storage}" if storage else run_dir
    on_interrupt(
        f"the finished trials are kept in {where}; continue with the same command and --resume"
    )
    with Bars(pad=18) as bars:
        out = run_compare(
            model,
            objective,
            run_dir=run_dir,
            methods=names,
            space=Space(lname, lnum, rho, candidates, types),
            storage=storage,
            resume=resume,
            workers=workers,
            device=device,
            dtype=dtype,
            loaded=loaded,
            progress=bars,
            on_method=bars.start,
        )
    print_table(out)
    console.print(f"wrote {run_dir}/compare.json, compare.md, compare.png")
