"""What `laserkit compare` writes: compare.json, compare.md (the table and what it can and
cannot say) and compare.png (a forest plot: each method's test change vs base with its paired
bootstrap 95% CI). The cells are formatted once here for the Markdown and the printed table."""

from __future__ import annotations

import math
from pathlib import Path

from ..core.figures import save_figure
from ..core.fileio import atomic_write_json, atomic_write_text

COLUMNS = (
    "method",
    "chosen",
    "val",
    "test",
    "Δ test vs base (95% CI)",
    "McNemar p",
    "rel. error",
    "trials (now)",
    "time s",
)


def _f(v: object, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _diff_ci(diff: float | None, ci: list | None, between: str = "") -> str | None:
    """ "+d (lo to hi)" (``between`` before lo, e.g. "95% CI "), or None without both."""
    if diff is None or not ci:
        return None
    lo, hi = ci
    return f"{diff:+.4f} ({between}{lo:+.4f} to {hi:+.4f})"


def ci_text(row: dict) -> str:
    return _diff_ci(row.get("diff"), row.get("ci95")) or "–"


def _p(row: dict) -> str:
    p = row.get("p_value")
    return "–" if p is None else f"{p:.3g}"


def _rel(row: dict) -> str:
    errs = row.get("rel_error") or []
    if not errs:
        return "–"
    if len(errs) == 1:
        return f"{errs[0]:.4f}"
    return f"{sum(errs) / len(errs):.4f} (mean, {len(errs)})"


def cells(out: dict) -> list[list[str]]:
    """The table's rows as text: the base model first, then one per method."""
    base = out["base"]
    rows = [
        [
            "base",
            "base",
            _f(base["validation"]["score"]),
            _f(base["test"]["score"]),
            "–",
            "–",
            "–",
            f"{base.get('trials', '–')}",
            _f(base.get("seconds"), 1),
        ]
    ]
    for r in out["rows"]:
        rows.append(
            [
                r["method"],
                r["chosen"],
                _f(r["validation"]["score"]),
                _f(r["test"]["score"]),
                ci_text(r),
                _p(r),
                _rel(r),
                f"{r['trials']} ({r['trials_run_now']})",
                f"{r['seconds']:.1f}",
            ]
        )
    return rows


def _log_loss(row: dict) -> str:
    text = _diff_ci(row.get("log_loss_diff"), row.get("log_loss_ci95"), "95% CI ")
    return "" if text is None else f"; test log-loss {text}"


def markdown(out: dict) -> str:
    obj = out["objective"]
    metric = out["base"]["test"].get("metric") or "score"
    n_val, n_test = out["base"]["validation"].get("n"), out["base"]["test"].get("n")
    sp = out["space"]
    lines = [
        f"# laserkit compare: {out['model']} on {obj.get('task', obj.get('type'))}",
        "",
        f"Each method ran its own search, chose on validation (n = {n_val}) and was scored "
        f"on test (n = {n_test}); the metric is {metric}. Grid: τ {sp['lname']}, ℓ "
        f"{sp['lnum']} ({sp.get('layers')}), ρ {sp['rho']}; greedy: the "
        f"{sp['candidates']} lowest-SNR matrices of types {sp['types']}. Trials live in "
        f"{out['storage']}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + " --- |" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells(out)]
    lines += [
        "",
        "- Δ test vs base: the chosen model's test " + metric + " minus the base "
        "model's, with a paired bootstrap 95% CI over test examples (2,000 resamples, "
        "seed 0); McNemar p: exact, on the test examples' right/wrong pairs.",
        "- rel. error: ‖W − Ŵ‖_F/‖W‖_F of each chosen edit (the mean where several).",
        "- trials: the method's own trials (edits applied) its run scored, and in brackets "
        "how many trials (base included) the last invocation scored; the base row: the "
        f"base model's trials, scored once and copied into the other runs; time s: "
        f"{out['time_measures']}.",
    ]
    if not out["base"].get("same_in_every_run", True):
        lines.append("- WARNING: the base model's scores differ between runs.")
    lines += ["", "## Per method", ""]
    for r in out["rows"]:
        lines.append(
            f"- **{r['method']}** ({r['about']}; run `{r['run']}`): "
            f"{r['verdict'] or 'no test comparison'}"
            + _log_loss(r)
            + (f"; selection: {r['selection']}" if r.get("selection") else "")
        )
    lines += ["", "![test change vs base](compare.png)", ""]
    return "\n".join(lines)


def forest_plot(out: dict, path: Path) -> Path:
    """Each method's test change vs base with its 95% CI, a line at 0 (no change)."""
    from .report import _plt  # noqa: PLC0415

    plt = _plt()
    rows = out["rows"]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.8))
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        if r.get("diff") is None or not r.get("ci95"):
            ax.text(0, y, "no comparison", ha="center", va="center", fontsize=8)
            continue
        lo, hi = r["ci95"]
        ax.errorbar(
            [r["diff"]],
            [y],
            xerr=[[r["diff"] - lo], [hi - r["diff"]]],
            fmt="o",
            color="tab:blue",
            capsize=4,
        )
        if r.get("p_value") is not None:  # the chosen edits are in the table (compare.md)
            ax.annotate(
                f"p = {r['p_value']:.2g}",
                (hi, y),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
    ax.axvline(0, color="gray", linestyle="--")
    ax.set_yticks(range(len(rows)), [r["method"] for r in reversed(rows)])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    metric = out["base"]["test"].get("metric") or "score"
    task = out["objective"].get("task", "")
    ax.set_xlabel(
        f"test {metric}: chosen − base (95% paired bootstrap CI), "
        f"n = {out['base']['test'].get('n')}"
    )
    ax.set_title(f"{task}: each method's choice vs the base model on test", fontsize=10)
    ax.margins(x=0.15)
    fig.tight_layout()
    return save_figure(fig, path)


def write_outputs(out: dict, run_dir: str | Path) -> dict[str, Path]:
    """compare.json, compare.md and compare.png in ``run_dir``, each written atomically."""
    run_dir = Path(run_dir)
    return {
        "json": atomic_write_json(run_dir / "compare.json", out),
        "md": atomic_write_text(run_dir / "compare.md", markdown(out)),
        "png": forest_plot(out, run_dir / "compare.png"),
    }
