"""`laserkit report RUN_DIR|URL`: a Markdown summary and PNG plots of a finished run.

Grid searches get the paper's Figure 2 view (validation accuracy change over layer × ρ, one
heatmap per τ) and accuracy / log-loss against ρ; greedy and compose runs get the score after
each step, kept steps marked.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..core.figures import save_figure
from ..core.fileio import atomic_write_text
from .result import RunResult
from .sequential import SAME_TEXT


def _fmt(v: object, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def headline_rows(result: RunResult | dict) -> list[tuple[str, dict, dict]]:
    """(name, validation summary, test summary) of the base model and the chosen one."""
    r = RunResult.read(result)
    return [
        ("base", r.base.validation, r.base.test),
        (r.chosen.label, r.best.validation, r.best.test),
    ]


def _headline_md(result: RunResult) -> list[str]:
    metric = result.base.test.get("metric", "score")
    if result.same_text:  # one score per model: the text it was decided on
        lines = [f"| model | {metric} (same text) | log-loss | n |", "| --- | --- | --- | --- |"]
        return lines + [
            f"| {name} | {_fmt(test.get('score'))} | {_fmt(test.get('log_loss'))} | "
            f"{test.get('n')} |"
            for name, _, test in headline_rows(result)
        ]
    lines = [
        f"| model | validation {metric} | validation log-loss | test {metric} | "
        "test log-loss | test n |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, val, test in headline_rows(result):
        lines.append(
            f"| {name} | {_fmt(val.get('score'))} | {_fmt(val.get('log_loss'))} | "
            f"{_fmt(test.get('score'))} | {_fmt(test.get('log_loss'))} | "
            f"{test.get('n')} |"
        )
    return lines


def _plt():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _full_rows(result: RunResult) -> list[dict]:
    """Grid trials scored on the whole validation split (halving's head rounds left out)."""
    return [r for r in result.trials or [] if r.get("fraction", 1.0) >= 1.0]


def heatmaps(result: RunResult | dict, out: Path) -> list[Path]:
    """Figure 2 style: validation accuracy (or score) change vs base over layer × ρ, per τ."""
    result = RunResult.read(result)
    plt = _plt()
    rows = _full_rows(result)
    key = "accuracy" if rows and rows[0].get("accuracy") is not None else "score"
    base = result.base.validation.get(key)
    paths = []
    for lname in sorted({r["lname"] for r in rows}):
        sub = [r for r in rows if r["lname"] == lname]
        layers = sorted({r["layer"] for r in sub})
        rhos = sorted({r["rho"] for r in sub if r["rho"] is not None}, reverse=True)
        if not rhos:
            continue
        grid = [[math.nan] * len(layers) for _ in rhos]
        for r in sub:
            grid[rhos.index(r["rho"])][layers.index(r["layer"])] = r[key] - base
        lim = max((abs(v) for row in grid for v in row if not math.isnan(v)), default=0) or 1e-9
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(layers) + 2), 0.45 * len(rhos) + 1.8))
        im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(layers)), [str(x) for x in layers])
        ax.set_yticks(range(len(rhos)), [f"{x:g}" for x in rhos])
        ax.set_xlabel("layer ℓ")
        ax.set_ylabel("ρ (fraction of rank kept)")
        ax.set_title(f"{lname}: validation {key} change vs base ({base:.3f})", fontsize=10)
        if len(layers) * len(rhos) <= 120:  # small grids: print the numbers too
            for (i, j), v in (
                (ij, grid[ij[0]][ij[1]])
                for ij in ((i, j) for i in range(len(rhos)) for j in range(len(layers)))
            ):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        paths.append(save_figure(fig, out / f"heatmap_{lname}.png"))
    return paths


def interval(row: dict, metric: str) -> tuple[float, float] | None:
    """A trial's (or base's) 95% interval of one plotted metric: the evaluation's own (ci95 for
    its score, log_loss_ci95), else Wilson's from accuracy and n (runs stored before)."""
    from ..eval.intervals import wilson  # noqa: PLC0415

    own = (
        row.get("log_loss_ci95")
        if metric == "log_loss"
        else row.get("ci95")
        if metric in ("score", row.get("metric"))
        else None
    )
    if own and all(v is not None and not math.isnan(v) for v in own):
        return own[0], own[1]
    if metric == "accuracy" and row.get("accuracy") is not None and row.get("n"):
        return wilson(row["accuracy"] * row["n"], int(row["n"]))
    return None


def _band(ax, xs: list, rows: list[dict], metric: str, **style) -> None:
    """Shade the 95% intervals of ``rows`` (one per x) where they are known."""
    ivs = [interval(r, metric) for r in rows]
    pts = [(x, iv) for x, iv in zip(xs, ivs, strict=True) if iv is not None]
    if pts:
        ax.fill_between(
            [x for x, _ in pts],
            [iv[0] for _, iv in pts],
            [iv[1] for _, iv in pts],
            alpha=0.18,
            linewidth=0,
            **style,
        )


def _base_band(ax, base: dict, metric: str) -> None:
    iv = interval(base, metric)
    if iv is not None:
        ax.axhspan(iv[0], iv[1], color="gray", alpha=0.12, label="base 95% interval")


def versus_rho(result: RunResult | dict, out: Path) -> Path | None:
    """Best validation accuracy and log-loss over layers, against ρ, one line per τ, each with
    the 95% interval of the plotted trial (band) and of the base model (gray)."""
    result = RunResult.read(result)
    plt = _plt()
    rows = [r for r in _full_rows(result) if r.get("rho") is not None]
    if not rows:
        return None
    metrics = [m for m in ("accuracy", "log_loss", "score") if rows[0].get(m) is not None][:2]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        best = min if m == "log_loss" or not rows[0].get("higher_is_better", True) else max
        for lname in sorted({r["lname"] for r in rows}):
            rhos = sorted({r["rho"] for r in rows if r["lname"] == lname})
            picked = [
                best(
                    (r for r in rows if r["lname"] == lname and r["rho"] == x),
                    key=lambda r, m=m: r[m],  # type: ignore[misc]
                )
                for x in rhos
            ]
            (line,) = ax.plot(rhos, [r[m] for r in picked], marker="o", label=lname)
            _band(ax, rhos, picked, m, color=line.get_color())
        base = result.base.validation
        if base.get(m) is not None:
            ax.axhline(base[m], color="gray", linestyle="--", label="base")
            _base_band(ax, base, m)
        ax.set_xscale("log")
        ax.set_xlabel("ρ")
        ax.set_ylabel(f"validation {m} ({best.__name__} over layers)")
        ax.set_title("bands: 95% intervals", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out / "versus_rho.png")


def progress_plot(result: RunResult | dict, out: Path) -> Path | None:
    """TPE: each trial's validation accuracy (or score) in the order proposed, and the best so
    far, against the base model: how soon the search found what it chose."""
    result = RunResult.read(result)
    plt = _plt()
    rows = _full_rows(result)
    if not rows:
        return None
    key = "accuracy" if rows[0].get("accuracy") is not None else "score"
    hib = key == "accuracy" or rows[0].get("higher_is_better", True)
    ys = [r[key] for r in rows]
    best = [max(ys[: i + 1]) if hib else min(ys[: i + 1]) for i in range(len(ys))]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = range(1, len(ys) + 1)
    ivs = [interval(r, key) for r in rows]
    err = [
        [y - iv[0] if iv else 0 for y, iv in zip(ys, ivs, strict=True)],
        [iv[1] - y if iv else 0 for y, iv in zip(ys, ivs, strict=True)],
    ]
    ax.errorbar(
        xs,
        ys,
        yerr=err,
        fmt="o",
        ms=3,
        color="tab:blue",
        elinewidth=0.6,
        label="trial (95% interval)",
    )
    ax.step(xs, best, where="post", color="tab:green", label="best so far")
    base = result.base.validation.get(key)
    if base is not None:
        ax.axhline(base, color="gray", linestyle="--", label="base")
        _base_band(ax, result.base.validation, key)
    ax.set_xlabel("trial (in the order proposed)")
    ax.set_ylabel(f"validation {key}")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, out / "progress.png")


def steps_plot(result: RunResult | dict, out: Path) -> Path | None:
    """Greedy / compose: the score after each step (kept steps filled)."""
    result = RunResult.read(result)
    plt = _plt()
    steps = result.steps or []
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(max(5, 0.4 * len(steps) + 2), 3.6))
    xs = list(range(len(steps) + 1))
    ys = [result.base.validation.get("score")] + [s["best_score"] for s in steps]
    ax.step(xs, ys, where="post", color="tab:blue", label="score of the kept model")
    kept_rows = [result.base.validation] + [{**s, "ci95": s.get("best_ci95")} for s in steps]
    ivs = [interval(r, "score") for r in kept_rows]
    if any(ivs):
        ax.fill_between(
            xs,
            [iv[0] if iv else y for iv, y in zip(ivs, ys, strict=True)],
            [iv[1] if iv else y for iv, y in zip(ivs, ys, strict=True)],
            step="post",
            color="tab:blue",
            alpha=0.15,
            linewidth=0,
            label="its 95% interval",
        )
    for kept, style in (
        (True, {"color": "tab:green", "label": "kept", "fmt": "o"}),
        (False, {"color": "tab:red", "fmt": "x", "label": "dropped"}),
    ):
        pts = [
            (i + 1, s["score"], interval(s, "score"))
            for i, s in enumerate(steps)
            if s["kept"] == kept
        ]
        if pts:
            err = [
                [y - iv[0] if iv else 0 for _, y, iv in pts],
                [iv[1] - y if iv else 0 for _, y, iv in pts],
            ]
            ax.errorbar(
                [x for x, _, _ in pts],
                [y for _, y, _ in pts],
                yerr=err,
                elinewidth=0.6,
                zorder=3,
                **style,
            )
    ax.set_xlabel("step")
    where = "" if result.same_text else "validation "
    ax.set_ylabel(f"{where}{result.base.validation.get('metric', 'score')}")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, out / "steps.png")


def write_report(result: RunResult | dict, out: str | Path) -> Path:
    """Write OUT/report.md and its plots for a run's result; returns the Markdown file."""
    result = RunResult.read(result)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task = result.objective.get("task", result.objective.get("type"))
    lines = [
        f"# laserkit {result.command} ({result.how}): {result.model} on {task}",
        "",
        f"Chosen: **{result.chosen.label}** "
        + (
            f"({SAME_TEXT})." if result.same_text else "(selected on validation, reported on test)."
        ),
        "",
        *_headline_md(result),
        "",
    ]
    from .significance import lines as significance_lines  # noqa: PLC0415

    sig = significance_lines(result)
    if sig:
        lines += ["## Is the improvement real?", "", *[f"- {s}" for s in sig], ""]
    from .final_eval import markdown as final_eval_lines  # noqa: PLC0415

    lines += final_eval_lines(result.final_eval or {})
    figures: list[Path | None] = []
    if result.command == "search":
        figures += heatmaps(result, out)
        figures.append(versus_rho(result, out))
        if result.strategy == "tpe":
            figures.append(progress_plot(result, out))
        rows = sorted(
            _full_rows(result), key=lambda r: (-(r.get("accuracy") or 0), r.get("log_loss") or 0)
        )[:10]
        lines += [
            "## Best validation trials",
            "",
            "| τ | ℓ | ρ | accuracy | log-loss | score |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['lname']} | {r['layer']} | {_fmt(r['rho'], 3)} | "
            f"{_fmt(r.get('accuracy'))} | {_fmt(r.get('log_loss'))} | "
            f"{_fmt(r.get('score'))} |"
            for r in rows
        ]
    else:
        figures.append(steps_plot(result, out))
        lines += ["## Steps", "", "| step | edit | score | kept |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {s['step']} | {s['edit']} | {_fmt(s['score'])} | {'yes' if s['kept'] else 'no'} |"
            for s in result.steps or []
        ]
    lines += ["", "## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in figures if p is not None]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
