"""`laserkit reproduce TASK`: the LASER paper's protocol in one command."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from . import app
from .common import DeviceOpt, DtypeOpt, TrustOpt, check_model_input, console, load_with_status
from .options import (
    PLACEHOLDER_RHO,
    BatchOpt,
    DataOpt,
    NoSaveOpt,
    ResumeOpt,
    RunDirOpt,
    RunOpt,
    StorageOpt,
    WorkersOpt,
)
from .search import _go, _run_dir


@app.command()
def reproduce(
    task: str = typer.Argument(
        ...,
        help="one of the paper's tasks: fever, bios-gender, "
        "bios-profession, hotpotqa, truthfulqa, bbh-epistemic, "
        "bbh-wikidata, counterfact, counterfact-generate",
    ),
    model: str = typer.Argument(
        "default",
        help="hub id, model directory, .gguf, or 'default' "
        "(the paper's: EleutherAI/gpt-j-6B, Llama-2 7B, roberta-base)",
    ),
    data: str = DataOpt,
    lnum: str = typer.Option(
        "all",
        "--lnum",
        help="layers ℓ of the grid (the reference's "
        "BIG-bench scripts: GPT-J 27-17, Llama-2 31-27, RoBERTa 11-1)",
    ),
    rate: str = typer.Option(
        None, "--rate", help="the reference's rates (default 1,2,4,8,9,9.5,9.9: ρ 0.9 … 0.01)"
    ),
    workers: int = WorkersOpt,
    run_dir: Path = RunDirOpt,
    run: str = RunOpt,
    resume: bool = ResumeOpt,
    storage: str = StorageOpt,
    batch_size: int = BatchOpt,
    no_save: bool = NoSaveOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """The paper's protocol: the reference's data, prompts, split, rank rule and selection (base
    never a candidate) over τ ∈ {fc_in, fc_out}; says which numbers compare with Table 1."""
    from ..model.targets import model_layout
    from ..search.config import ObjectiveConfig, RunConfig
    from ..search.paper import PAPER_LNAMES, PAPER_RATES, check_task
    from ..search.session import check_workers

    check_task(task)
    check_workers(workers, device)
    run_dir = _run_dir(run_dir, run, "reproduce", task, resume)
    objective = ObjectiveConfig.from_cli(task, data, None, batch_size, None, None)
    check_model_input(model, trust_remote_code)
    loaded = load_with_status(model, dtype, device, trust_remote_code)
    cfg = RunConfig.from_cli(
        "grid",
        model,
        objective,
        num_layers=model_layout(loaded.model).num_layers,
        lname=PAPER_LNAMES,
        lnum=lnum,
        rate=rate or PAPER_RATES,
        intervention={"kind": "rank-reduction", "rho": PLACEHOLDER_RHO},
        dtype=dtype,
        selection="reference",
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
    )
    _print_comparability(task, run_dir, loaded.model.config, lnum, rate or PAPER_RATES)


def _print_comparability(task: str, run_dir: Path, config: object, lnum: str, rates: str) -> None:
    from ..search.paper import comparability, model_key

    path = run_dir / "result.json"
    if not path.is_file():  # workers elsewhere will finish the run
        return
    result = json.loads(path.read_text())
    n = result.get("base", {}).get("test", {}).get("n_available")
    same, differ = comparability(task, n, model_key(config), lnum, rates)
    console.print("comparable with the paper's Table 1 (the reference's protocol):")
    for line in same:
        console.print(f"  = {line}")
    console.print("not comparable, or not the reference's:")
    for line in differ:
        console.print(f"  ≠ {line}")
