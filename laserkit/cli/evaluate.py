"""`laserkit eval` (score a model on a task) and `laserkit tasks` (what tasks exist)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .common import (
    DeviceOpt,
    DtypeOpt,
    ModelArg,
    console,
    load_with_status,
    on_interrupt,
    on_interrupt_publishing,
)

out_console = Console()  # results go to stdout; status and errors to stderr


def _fmt(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


@app.command("eval")
def eval_(
    model: str = ModelArg,
    task: str = typer.Option(..., "--task", "-t", help="a task name (see `laserkit tasks`) or a "
                             "task file: .yaml/.json declaration, or .json/.jsonl/.csv data"),
    data: str = typer.Option(None, "--data", help="the task's data from a local file in its "
                             "original format, or 'hub' for the Hugging Face hub"),
    split: str = typer.Option("all", "--split", help="all, validation (first 20%), test (rest)"),
    limit: int = typer.Option(None, "--limit", help="use the first N examples (then split)"),
    batch_size: int = typer.Option(None, "--batch-size",
                                   help="sequences per forward pass (default 16 on GPU, 4 on CPU)"),
    seed: int = typer.Option(None, "--seed", help="shuffle the examples with this seed first"),
    out: Path = typer.Option(None, "--out", help="write records.jsonl and summary.json here"),
    embedder: str = typer.Option("minilm", "--embedder", help="dpo-semantic: minilm (packaged), "
                                 "self (the model under test), or a sentence-transformers dir"),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens",
                                       help="generation length (default: the task's)"),
    chat_template: str = typer.Option(None, "--chat-template",
                                      help="dpo-semantic: model, chatml or none"),
    max_length: int = typer.Option(None, "--max-length",
                                   help="context limit in tokens (default: the model's)"),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
) -> None:
    """Score a model on a task: accuracy, log-loss (or perplexity, semantic score) and
    per-example records."""
    if out is None:
        on_interrupt("nothing was written; run the command again to evaluate")
    else:
        on_interrupt_publishing(out, "the evaluation", "run the command again to evaluate")
    if out is not None:  # before any work, and before importing torch
        from ..fileio import EVAL_FILES, check_dir_holds_only

        check_dir_holds_only(out, EVAL_FILES, kind="evaluation")
    from ..evaluate import evaluate
    from ..tasks import get_task

    t = get_task(task, data)
    with console.status(f"reading {t.name} data ..."):
        t.examples()  # fail on missing data before loading the model
    loaded = load_with_status(model, dtype, device)
    result = evaluate(loaded.model, loaded.tokenizer, t, split=split, limit=limit,
                      batch_size=batch_size, seed=seed, embedder=embedder,
                      max_new_tokens=max_new_tokens, max_length=max_length,
                      chat_template=chat_template, progress=True)
    s = result.summary
    table = Table(title=f"{s['task']} on {loaded.source} ({s['split']}, n={s['n']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    shown = ("score", "accuracy", "accuracy_normalized", "f1", "log_loss", "perplexity",
             "semantic_score", *sorted(k for k in s if k.startswith("top")), "n_tokens",
             "truncated", "seconds")
    for key in shown:
        if key in s:
            name = f"score ({s['metric']}, {'higher' if s['higher_is_better'] else 'lower'} "\
                   "is better)" if key == "score" else key
            table.add_row(name, _fmt(s[key]))
    out_console.print(table)
    if out is not None:
        result.write(out)
        console.print(f"wrote {len(result.records)} records and the summary to {out}")


@app.command()
def tasks() -> None:
    """The built-in tasks: how each is scored and where its data comes from."""
    from ..tasks import list_tasks

    table = Table(title="laserkit tasks (also: a task file, see `laserkit eval --help`)")
    for col in ("task", "kind", "metric", "data", "description"):
        table.add_column(col)
    for t in list_tasks():
        table.add_row(t.name, t.kind, t.metric, t.where(), t.description)
    out_console.print(table)
