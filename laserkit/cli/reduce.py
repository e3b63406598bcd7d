"""`laserkit reduce` and `laserkit targets`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from ..interventions import KINDS, Intervention
from . import app
from .common import (
    DeviceOpt,
    DtypeOpt,
    ModelArg,
    TrustOpt,
    check_model_input,
    check_source_out,
    console,
    load_with_status,
    on_interrupt_publishing,
)
from .options import FROM_OPTIONS, intervention_options

if TYPE_CHECKING:
    from ..edit.record import EditRecord


def intervention_from_options(
    intervention: str,
    rate: float | None,
    rho: float | None,
    use_quality: bool,
    min_diversity: bool,
    vendi_q: float,
    bandwidth: float | str,
    estimator: str = "iqr",
):
    """One Intervention from the old hand-written option list (kept for callers of the function;
    commands use ``options.intervention_options``). ρ is dropped for kinds without one."""
    from ..interventions import kind_class
    from ..interventions.base import field_map
    from .options import build, collect

    values = {
        "rate": rate,
        "rho": rho,
        "use_quality": use_quality,
        "min_diversity": min_diversity,
        "q": vendi_q,
        "bandwidth": bandwidth,
        "estimator": estimator,
    }
    if "rho" not in field_map(kind_class(intervention)):
        values.update(rho=None, rate=None)
    return build(intervention, values, collect(KINDS.names()))


BANDWIDTH_HELP = (
    "vendi-score: RBF bandwidth σ, k = exp(−‖x−y‖²/2σ²): a number (1 is the "
    "fork's kernel) or 'median' (σ = median distance between rows)"
)


def _print_records(records: list[EditRecord], iv, source: str) -> None:
    table = Table(title=f"{iv.describe()} on {source}")
    for col in ("lname", "layer", "module", "shape", "rank kept", "‖W−Ŵ‖/‖W‖"):
        table.add_column(col)
    for rec in records:
        table.add_row(
            rec.lname,
            str(rec.layer),
            rec.module,
            "×".join(map(str, rec.shape)),
            str(rec.rank),
            f"{rec.rel_error:.4f}",
        )
    Console().print(table)  # the result, on stdout; status and errors go to stderr


@app.command()
@intervention_options()
def reduce(
    model: str = ModelArg,
    lname: str = typer.Option(
        ...,
        "--lname",
        help="matrix type: fc_in, fc_out, fc_up, mlp, "
        "q_proj, k_proj, v_proj, out_proj, attn, dont, or a module path "
        "(see `laserkit targets`); comma-separated for several",
    ),
    lnum: str = typer.Option(..., "--lnum", help="layer: 7, -1 (last), 3,5,7, 20-23, -4:, all"),
    iv: Intervention = FROM_OPTIONS,
    out: Path = typer.Option(
        None,
        "--out",
        help="save the edited model here: a directory "
        "(Hugging Face safetensors), or FILE.gguf for a GGUF source",
    ),
    force: bool = typer.Option(False, "--force", help="replace --out if it exists"),
    in_memory: bool = typer.Option(
        False,
        "--in-memory",
        help="load the whole model even for a local checkpoint (default: edit it out of core)",
    ),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Apply one intervention to the chosen matrices and (optionally) save the edited model.

    A local checkpoint (safetensors directory or GGUF) is edited out of core: the model is never
    built, only the edited tensors are read, and each keeps its stored dtype (a --dtype other
    than the stored one loads the model instead). --out FILE.gguf writes GGUF (GGUF sources).
    """
    from ..core.fileio import check_out_target
    from ..edit.write import write_edited

    check_model_input(model, trust_remote_code)
    if out is not None:
        check_out_target(out, overwrite=force)  # before loading and decomposing anything
        check_source_out(model, out)
        on_interrupt_publishing(out, "the edited model", "run the command again to save")
    with console.status(f"editing {model} ...") as status:
        # a trusted model's own code is run by loading it; out of core never builds it
        done = write_edited(
            model,
            [(lname, lnum, iv)],
            out,
            in_memory=in_memory,
            overwrite=force,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            progress=status.update,
        )
    if done.out_of_core:
        console.print(f"edited out of core (the model was not built): {len(done.records)} matrices")
    _print_records(done.records, iv, done.source)
    if out is not None:
        console.print(f"saved edited model to {out}")


@app.command()
def targets(
    model: str = ModelArg,
    lname: str = typer.Option(None, "--lname", help="show what this lname resolves to"),
    lnum: str = typer.Option("all", "--lnum", help="layers, with --lname"),
    dtype: str = DtypeOpt,
    device: str = typer.Option("cpu", "--device"),
    trust_remote_code: bool = TrustOpt,
) -> None:
    """The lname/lnum vocabulary this model offers and the matrices each resolves to."""
    from ..model.targets import describe, model_layout, resolve
    from .output import results

    loaded = load_with_status(model, dtype, device, trust_remote_code)
    layout = model_layout(loaded.model)
    if lname:
        table = Table(title=f"{lname} @ {lnum}")
        for col in ("layer", "lname", "matrix", "rows"):
            table.add_column(col)
        for t in resolve(layout, lname, lnum):
            rows = "all" if t.rows is None else ", ".join(f"{a}:{b}" for a, b in t.rows[:4])
            if t.rows is not None and len(t.rows) > 4:
                rows += f", … ({len(t.rows)} blocks)"
            table.add_row(
                str(t.layer), t.lname, t.param + (" (Conv1D, in×out)" if t.transposed else ""), rows
            )
        results.print(table)
        return
    table = Table(
        title=f"{type(loaded.model).__name__}: {layout.num_layers} layers under "
        f"'{layout.prefix}' (lnum 0..{layout.num_layers - 1}, -1 = last, all)"
    )
    table.add_column("lname")
    table.add_column("meaning")
    table.add_column("matrices in each block")
    for name, meaning, rels in describe(layout):
        table.add_row(name, meaning, ", ".join(rels))
    results.print(table)
