"""`laserkit scan` (streaming spectral scan) and `laserkit spectrum` (fine-tuning configs)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import typer
from rich.table import Table

from . import app
from .common import DeviceOpt, ModelArg, TrustOpt, check_model_input, console, on_interrupt

FULL_TABLE_MAX = 64  # above this many matrices, `--table auto` prints a per-type summary


def _num(v: float, digits: int = 4) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    return f"{v:.{digits}g}"


def _full_table(result) -> Table:
    table = Table(title=f"spectral scan of {result.source}")
    for col in (
        "module",
        "type",
        "layer",
        "shape",
        "σ̂",
        "τ",
        "n>τ",
        "SNR",
        "SNR/s_max",
        "stable rank",
        "eff. rank",
    ):
        table.add_column(col, justify="left" if col in ("module", "type") else "right")
    for r in result.records:
        st = r.stats
        table.add_row(
            r.module,
            r.type,
            "" if r.layer is None else str(r.layer),
            "×".join(map(str, r.shape)),
            _num(st["sigma_hat"]),
            _num(st["mp_threshold"]),
            str(st["n_above"]),
            _num(st["snr"]),
            _num(st["snr_over_smax"]),
            _num(st["stable_rank"]),
            _num(st["effective_rank"]),
        )
    return table


def _summary_table(result) -> Table:
    from ..spectral.spectrum import type_order

    table = Table(
        title=f"spectral scan of {result.source}: per module type "
        f"({len(result.records)} matrices; full table in scan.csv)"
    )
    for col in (
        "type",
        "matrices",
        "SNR min",
        "SNR median",
        "SNR max",
        "lowest-SNR layer",
        "median n>τ",
        "median eff. rank",
    ):
        table.add_column(col, justify="left" if col == "type" else "right")
    for typ in type_order(r.type for r in result.records):
        rs = [r for r in result.records if r.type == typ]
        finite = [r for r in rs if not math.isnan(r.stats["snr"])]
        snrs = sorted(r.stats["snr"] for r in finite)
        low = min(finite, key=lambda r: r.stats["snr"], default=None)
        table.add_row(
            typ,
            str(len(rs)),
            _num(snrs[0]) if snrs else "NaN",
            _num(statistics.median(snrs)) if snrs else "NaN",
            _num(snrs[-1]) if snrs else "NaN",
            "" if low is None or low.layer is None else str(low.layer),
            _num(statistics.median(r.stats["n_above"] for r in rs)),
            _num(statistics.median(r.stats["effective_rank"] for r in rs)),
        )
    return table


def _notes(result) -> list[str]:
    """Why some values are NaN or ∞, and what was skipped."""
    lines = []
    inf = [r for r in result.records if math.isinf(r.stats["snr"])]
    nan = [r for r in result.records if math.isnan(r.stats["snr"])]
    if inf:
        lines.append(
            f"{len(inf)} matrices have SNR = ∞: no singular value at or below τ (the "
            "noise sum is empty), e.g. " + inf[0].module
        )
    if nan:
        lines.append(
            f"{len(nan)} matrices have SNR = NaN: {nan[0].stats['note']} (e.g. {nan[0].module})"
        )
    vectors = sum(1 for r in result.records if min(r.shape) == 1)
    if vectors:
        lines.append(
            f"{vectors} 1-D weights (norm scales) scanned as 1×n matrices, as Spectrum "
            "does: one singular value, no noise"
        )
    biases = sum(1 for why in result.skipped.values() if why.startswith("1-D"))
    if biases:
        lines.append(f"{biases} biases skipped: Spectrum scans module weights only")
    return lines


@app.command()
def scan(
    model: str = ModelArg,
    out: Path = typer.Option(
        None,
        "--out",
        help="write scan.json, snr_results.json (Spectrum's "
        "layout), scan.csv, snr_heatmap.png and per-matrix singular values "
        "here; a scan interrupted into the same --out resumes",
    ),
    types: str = typer.Option(
        None,
        "--types",
        help="module types: mlp, attn, fc_in, q_proj, "
        "..., or paths like mlp.down_proj, lm_head; comma-separated",
    ),
    layers: str = typer.Option(
        None,
        "--layers",
        help="layers: 7, -1, 3,5,7, 20-31, -4:, all "
        "(matrices outside the blocks are left out when given)",
    ),
    device: str = DeviceOpt,
    restart: bool = typer.Option(
        False, "--restart", help="recompute every matrix even if --out already holds it"
    ),
    table: str = typer.Option(
        "auto",
        "--table",
        help="full (every matrix), summary (per type) "
        f"or auto (full up to {FULL_TABLE_MAX} matrices)",
    ),
    lowest: int = typer.Option(
        15,
        "--lowest",
        help="also list the k lowest-SNR mlp/attn matrices (laserRMT's candidates); 0 to skip",
    ),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="write the heatmap PNG"),
    threads: int = typer.Option(
        None,
        "--threads",
        help="CPU threads for the linear algebra "
        "(default: torch's; 1 is often fastest on a busy machine)",
    ),
    trust_remote_code: bool = TrustOpt,
) -> None:
    """SNR and spectrum statistics of every weight matrix (norm scales as 1×n, as Spectrum
    scans them), streamed from the checkpoint files."""
    from ..core.errors import LaserkitError
    from ..core.fileio import refuse_file

    if table not in ("auto", "full", "summary"):
        raise LaserkitError(f"unknown --table {table!r}: use auto, full or summary")
    check_model_input(model, trust_remote_code)
    if out is not None:
        refuse_file(out)  # the rest of --out's checks need the checkpoint's fingerprint
    from ..spectral.scan import lowest_snr
    from ..spectral.scan import scan as run_scan
    from .output import results

    if out is not None:
        on_interrupt(
            f"the matrices finished so far are kept in {out}/matrices; the scan resumes "
            "from them when run again with the same --out"
        )
    from ..io.open import open_checkpoint

    result = run_scan(
        open_checkpoint(model, trust_remote_code),
        out,
        types=types,
        layers=layers,
        device=device,
        resume=not restart,
        progress=True,
        plots=plot,
        threads=threads,
    )
    full = table == "full" or (table == "auto" and len(result.records) <= FULL_TABLE_MAX)
    results.print(_full_table(result) if full else _summary_table(result))
    if lowest > 0:
        cands = lowest_snr(result, lowest)
        if cands:
            results.print(
                f"lowest-SNR candidates (laserRMT, k={lowest}): "
                + ", ".join(f"{lname}@{layer}" for _, layer, lname in cands)
            )
    for line in _notes(result):
        console.print(f"note: {line}")
    if out is not None:
        reused = f" ({result.reused} reused from an earlier run)" if result.reused else ""
        console.print(f"wrote {len(result.records)} matrices{reused} to {out}")


@app.command()
def spectrum(
    source: Path = typer.Argument(
        ...,
        help="a `laserkit scan --out` directory, or a Spectrum "
        "SNR JSON file (flat or grouped by type)",
    ),
    top_percent: float = typer.Option(
        50.0,
        "--top-percent",
        help="per module type, unfreeze this percentage of layers with the highest SNR/s_max",
    ),
    fmt: str = typer.Option(
        "axolotl",
        "--format",
        help="axolotl (Spectrum's "
        "unfrozen_parameters YAML, byte for byte), axolotl-named (head and "
        "embedding lines named from the checkpoint) or llama-factory",
    ),
    empty_noise: str = typer.Option(
        "sum",
        "--empty-noise",
        help="SNR/s_max of a matrix with "
        "no noise singular value: sum (ΣS/s_max, Spectrum since "
        "April 2025) or inf (older Spectrum); for a scan "
        "directory (a Spectrum JSON keeps its own values)",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="YAML file to write (default: next to the "
        "input, named after the format and percentage)",
    ),
) -> None:
    """Spectrum's fine-tuning config: the top p% of each module type by SNR/s_max."""
    from ..core.errors import LaserkitError
    from ..core.fileio import atomic_write_text
    from ..spectral.scan import load_scan
    from ..spectral.spectrum import (
        FORMATS,
        check_empty_noise,
        read_spectrum_json,
        special_modules,
        summary_line,
    )

    if fmt not in FORMATS:
        raise LaserkitError(f"unknown --format {fmt!r}: use {', '.join(FORMATS)}")
    check_empty_noise(empty_noise)
    if source.is_dir():
        result = load_scan(source, with_s=False)
        entries = result.spectrum_entries(empty_noise)
        embed, head = special_modules(r.module for r in result.records if r.layer is None)
        folder = source
    elif source.is_file():
        entries = read_spectrum_json(source)
        embed, head = special_modules(entries)
        folder = source.parent
    else:
        raise LaserkitError(f"{source} does not exist: give a scan directory or a Spectrum JSON")
    text = FORMATS[fmt](entries, top_percent, embed=embed, head=head)
    stem = {
        "axolotl": "unfrozen_parameters",
        "axolotl-named": "unfrozen_parameters_named",
        "llama-factory": "llama_factory",
    }[fmt]
    target = out or folder / f"{stem}_{top_percent:g}percent.yaml"
    atomic_write_text(target, text)
    console.print(summary_line(target, entries, top_percent, fmt))
