"""``--final-eval TASKS`` after search / greedy / compose: the base and the chosen model scored on
other tasks (the benchmarks a reduced model is published with, e.g. lm-eval:arc_easy,hellaswag),
each with its 95% interval and, where the metric is per example, the paired difference with its
bootstrap CI (laserkit.eval.stats). Every example of each task is scored (split "all"): the search
never saw these tasks, so there is nothing to hold out.

The result goes into result.json and the report under ``final_eval``."""

from __future__ import annotations

from typing import Any

from ..core.errors import LaserkitError


def parse_final_eval(spec: str) -> list[str]:
    """``fever,lm-eval:arc_easy,hellaswag`` → [fever, lm-eval:arc_easy, lm-eval:hellaswag]: after
    ``lm-eval:`` every following name is an lm-eval task too (each is scored on its own)."""
    out, harness = [], False
    for name in (n.strip() for n in spec.split(",")):
        if not name:
            raise LaserkitError(
                f"--final-eval {spec!r}: an empty task name; give tasks "
                "separated by commas, e.g. lm-eval:arc_easy,hellaswag"
            )
        if name.startswith("lm-eval:"):
            harness = True
            out.append(name)
        else:
            out.append(f"lm-eval:{name}" if harness else name)
    return out


def check_final_eval(spec: str | None, include_path: str | None) -> list:
    """The tasks, built now (data read), so that a wrong name fails before the search runs."""
    if not spec:
        return []
    from ..tasks import get_task  # noqa: PLC0415

    return [
        get_task(name, include_path if name.startswith("lm-eval:") else None)
        for name in parse_final_eval(spec)
    ]


def final_eval(
    tasks: list,
    loaded,
    edits: list[dict],
    batch_size: int | None = None,
    batch_tokens: int | str | None = None,
) -> dict:
    """{task name: base and chosen score, their intervals, the paired difference}; the model is
    left as it was (the chosen edits are undone). Batches as the run's trials'."""
    from ..edit.editor import Editor  # noqa: PLC0415
    from ..eval import stats  # noqa: PLC0415
    from ..eval.batching import search_batching  # noqa: PLC0415
    from ..eval.evaluate import evaluate  # noqa: PLC0415
    from .trial import apply_edits  # noqa: PLC0415

    rows, budget = search_batching(loaded.model, batch_size, batch_tokens)
    kw: dict[str, Any] = {"batch_size": rows, "batch_tokens": budget or "off"}
    if batch_size is None and budget is None:
        kw = {}  # evaluate's own default
    out: dict = {}
    for task in tasks:
        base = evaluate(loaded.model, loaded.tokenizer, task, **kw)
        editor = Editor(loaded.model)
        apply_edits(editor, edits)
        try:
            chosen = evaluate(loaded.model, loaded.tokenizer, task, **kw)
        finally:
            editor.restore()
        row = {
            "metric": task.metric,
            "higher_is_better": task.higher_is_better,
            "n": base.summary["n"],
            "base": base.summary["score"],
            "chosen": chosen.summary["score"],
            "base_ci95": base.summary.get("ci95"),
            "chosen_ci95": chosen.summary.get("ci95"),
        }
        try:
            cmp = stats.compare(base.records, chosen.records, task.metric, task.higher_is_better)
            row.update({k: cmp[k] for k in ("diff", "ci95", "p_value", "verdict") if k in cmp})
        except (ValueError, KeyError, TypeError) as e:
            row["paired"] = f"unavailable: {e}"  # corpus metrics have no per-example value
        out[task.name] = row
    return out


def markdown(final: dict) -> list[str]:
    """The report's "Other tasks" table."""
    if not final:
        return []
    lines = [
        "## Other tasks (--final-eval, every example)",
        "",
        "| task | metric | n | base [95% CI] | chosen [95% CI] | chosen − base [95% CI] |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def ci(v, iv) -> str:
        return f"{v:.4f}" + (f" [{iv[0]:.4f}, {iv[1]:.4f}]" if iv else "")

    for name, r in final.items():
        diff = ci(r["diff"], r.get("ci95")) if "diff" in r else r.get("paired", "")
        lines.append(
            f"| {name} | {r['metric']} | {r['n']} | {ci(r['base'], r['base_ci95'])} "
            f"| {ci(r['chosen'], r['chosen_ci95'])} | {diff} |"
        )
    return [*lines, ""]
