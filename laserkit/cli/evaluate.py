"""`laserkit eval` (score a model on a task) and `laserkit tasks` (what tasks exist)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .common import (
    DeviceOpt,
    DtypeOpt,
    ModelArg,
    TrustOpt,
    check_model_input,
    console,
    load_with_status,
    on_interrupt,
    require_tokenizer,
)
from .options import BatchTokensOpt

out_console = Console()  # results go to stdout; status and errors to stderr


def _fmt(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


@app.command("eval")
def eval_(
    model: str = ModelArg,
    task: str = typer.Option(
        ...,
        "--task",
        "-t",
        help="a task name (see `laserkit tasks`) or a "
        "task file: .yaml/.json declaration (FILE#NAME picks one of "
        "several), or .json/.jsonl/.csv data; format: docs/tasks.md",
    ),
    data: str = typer.Option(
        None,
        "--data",
        help="the task's data from a local file in its "
        "original format, or 'hub' for the Hugging Face hub",
    ),
    include_path: str = typer.Option(
        None,
        "--include-path",
        help="lm-eval tasks (--task lm-eval:NAME): a directory of your own lm-eval task YAML files",
    ),
    split: str = typer.Option("all", "--split", help="all, validation (first 20%), test (rest)"),
    limit: int = typer.Option(None, "--limit", help="use the first N examples (then split)"),
    batch_size: int = typer.Option(
        None,
        "--batch-size",
        help="sequences per forward pass without a token budget (default 4 on CPU, 16 on "
        "GPU); under a budget, the most in one",
    ),
    batch_tokens: str = BatchTokensOpt,
    seed: int = typer.Option(None, "--seed", help="shuffle the examples with this seed first"),
    out: Path = typer.Option(None, "--out", help="write records.jsonl and summary.json here"),
    embedder: str = typer.Option(
        "minilm",
        "--embedder",
        help="dpo-semantic: minilm (packaged), "
        "self (the model under test), or a sentence-transformers dir",
    ),
    max_new_tokens: int = typer.Option(
        None, "--max-new-tokens", help="generation length (default: the task's)"
    ),
    chat_template: str = typer.Option(
        None,
        "--chat-template",
        help="none (raw prompt), model (the tokenizer's), chatml, "
        "a Jinja template or a file (default: the task's)",
    ),
    system_prompt: str = typer.Option(
        None, "--system-prompt", help="a system message (needs a chat template)"
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="show the first rendered prompts and answers and stop (no model is run)",
    ),
    show: int = typer.Option(3, "--show", help="--dry-run: how many examples to show"),
    max_length: int = typer.Option(
        None, "--max-length", help="context limit in tokens (default: the model's)"
    ),
    compare: str = typer.Option(
        None,
        "--compare",
        help="a second model (hub id, directory, "
        ".gguf; e.g. a saved edited model) scored on the same examples: "
        "paired difference, 95% bootstrap CI and McNemar p-value",
    ),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
    trust_remote_code: bool = TrustOpt,
) -> None:
    """Score a model on a task: accuracy, log-loss (or perplexity, semantic score) and
    per-example records."""
    if out is None:
        on_interrupt("nothing was written; run the command again to evaluate")
    else:
        on_interrupt(
            f"the records scored so far are kept in {out}/records.partial.jsonl; the "
            "same command continues after them"
        )
    from ..eval.batching import parse_batch_tokens

    parse_batch_tokens(batch_tokens)  # a bad value fails before any work
    if out is not None:  # before any work, and before importing torch
        from ..core.fileio import EVAL_FILES, check_dir_holds_only

        check_dir_holds_only(out, EVAL_FILES, kind="evaluation")
    from ..eval.evaluate import evaluate
    from ..tasks import get_task
    from ..tasks.kinds.lm_eval import task_source
    from ..tasks.sources import load_examples

    for name, option in ((model, "MODEL"), (compare, "--compare")):
        if name is not None:
            check_model_input(name, trust_remote_code)
            if not dry_run:
                require_tokenizer(name, option)
    t = get_task(task, task_source(task, data, include_path))
    with console.status(f"reading {t.name} data ..."):
        load_examples(t)  # fail on missing data before loading the model
    if dry_run:
        _dry_run(t, model, show, chat_template, system_prompt, trust_remote_code)
        return
    loaded = load_with_status(model, dtype, device, trust_remote_code)
    _say_chat_fallback(t, loaded.tokenizer, chat_template, system_prompt)
    options: dict[str, Any] = dict(  # the keyword arguments evaluate and evaluate_to share
        batch_size=batch_size,
        embedder=embedder,
        max_new_tokens=max_new_tokens,
        max_length=max_length,
        chat_template=chat_template,
        system_prompt=system_prompt,
        progress=True,
    )
    if batch_tokens != "auto":  # the default stays out: earlier evaluations still resume
        options["batch_tokens"] = batch_tokens
    if out is None:
        result = evaluate(
            loaded.model, loaded.tokenizer, t, split=split, limit=limit, seed=seed, **options
        )
    else:  # records appended as they are scored; a stopped evaluation continues
        from ..eval.stream import evaluate_to

        result = evaluate_to(
            out,
            loaded.model,
            loaded.tokenizer,
            t,
            split=split,
            limit=limit,
            seed=seed,
            log=lambda m: console.print(m, markup=False),
            **options,
        )
    s = result.summary
    table = Table(title=f"{s['task']} on {loaded.source} ({s['split']}, n={s['n']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    shown = (
        "n_available",
        "score",
        "match",
        "chat_template",
        "accuracy",
        "accuracy_normalized",
        "f1",
        "part_recall",
        "log_loss",
        "perplexity",
        "semantic_score",
        *sorted(k for k in s if k.startswith("top")),
        "n_tokens",
        "chunking",
        "chunk_length",
        "n_chunks",
        "window",
        "stride",
        "max_new_tokens",
        "truncated",
        "seconds",
    )
    for key in shown:
        if key in s:
            name = (
                f"score ({s['metric']}, {'higher' if s['higher_is_better'] else 'lower'} is better)"
                if key == "score"
                else key
            )
            table.add_row(name, _fmt(s[key]))
    out_console.print(table)
    if compare is not None:
        _compare(
            result,
            compare,
            t,
            dtype,
            device,
            trust_remote_code,
            split=split,
            limit=limit,
            batch_size=batch_size,
            seed=seed,
            embedder=embedder,
            max_new_tokens=max_new_tokens,
            max_length=max_length,
            chat_template=chat_template,
        )
    if out is not None:
        result.write(out)
        console.print(f"wrote {len(result.records)} records and the summary to {out}")


def _dry_run(
    t,
    model: str,
    show: int,
    chat_template: str | None,
    system_prompt: str | None,
    trust_remote_code: bool = False,
) -> None:
    """Print the first examples as the model would see them; load a tokenizer only when the
    chat template needs one."""
    import json

    from ..eval.evaluate import chat_settings, preview
    from ..tasks.kinds import kind_of
    from ..tasks.sources import load_examples

    chat, _ = chat_settings(t, chat_template, system_prompt)
    tokenizer = None
    if chat not in ("none", "chatml"):
        from transformers import AutoTokenizer

        from ..io.source import ModelSource

        src = ModelSource.parse(model)
        gguf = src.gguf_file  # its tokenizer is read from the file: no conversion for a preview
        path = str(gguf.parent if gguf else src.path if src.kind == "dir" else src.text)
        extra = {"gguf_file": gguf.name} if gguf else {}
        with console.status(f"loading the tokenizer of {model} ..."):
            try:
                tokenizer = AutoTokenizer.from_pretrained(
                    path, local_files_only=True, trust_remote_code=trust_remote_code, **extra
                )
            except (OSError, ValueError) as e:
                from ..core.errors import LaserkitError, first_line

                raise LaserkitError(
                    f"cannot load the tokenizer of {model}: {first_line(e)}"
                ) from None
    _say_chat_fallback(t, tokenizer, chat_template, system_prompt)
    items = preview(t, tokenizer, show, chat_template=chat_template, system_prompt=system_prompt)
    out_console.print(
        f"task {t.name}: kind {t.kind}, metric {t.metric} "
        f"({'higher' if t.higher_is_better else 'lower'} is better)"
        + kind_of(t.kind).describe(t)
        + f", chat_template {chat}, {len(load_examples(t))} examples; "
        f"data: {t.where()}",
        markup=False,
        highlight=False,
    )
    for item in items:
        out_console.rule(f"example {item.pop('id')}")
        for key, value in item.items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            out_console.print(f"[bold]{key}:[/bold]")
            out_console.print(text, markup=False, highlight=False)


def _say_chat_fallback(
    task, tokenizer, chat_template: str | None, system_prompt: str | None
) -> None:
    """One line on stderr when the task asks for the model's chat template and it has none."""
    from ..eval.evaluate import chat_settings
    from ..eval.scoring import chat_fallback_note

    chat, _ = chat_settings(task, chat_template, system_prompt)
    note = chat_fallback_note(tokenizer, chat)
    if note:
        console.print(note, markup=False, highlight=False)


def _compare(
    result, other_model: str, task, dtype: str, device: str, trust_remote_code: bool = False, **kw
) -> None:
    """Score a second model on the same examples and print the paired comparison; the summary
    gets a ``compare`` entry (written with --out)."""
    from ..eval import stats
    from ..eval.evaluate import evaluate

    other = load_with_status(other_model, dtype, device, trust_remote_code)
    second = evaluate(other.model, other.tokenizer, task, progress=True, **kw)
    s = result.summary
    try:
        cmp = stats.compare(result.records, second.records, s["metric"], s["higher_is_better"])
    except (TypeError, ValueError) as e:  # lm-eval's corpus metrics (word_perplexity, bleu)
        from ..core.errors import LaserkitError

        raise LaserkitError(
            f"--compare needs a metric with a value per example; {s['metric']} "
            f"of {s['task']} has none ({e})"
        ) from None
    cmp["model"] = other_model
    cmp["other_score"] = second.summary["score"]
    s["compare"] = cmp
    table = Table(title=f"paired comparison on the same {cmp['n']} examples")
    for col in ("", "base", "other", "other − base", "95% CI"):
        table.add_column(col, justify="right")
    table.add_row(
        s["metric"],
        _fmt(s["score"]),
        _fmt(second.summary["score"]),
        f"{cmp['diff']:+.4f}",
        f"{cmp['ci95'][0]:+.4f} to {cmp['ci95'][1]:+.4f}",
    )
    if "log_loss" in cmp:
        ll = cmp["log_loss"]
        table.add_row(
            "log_loss",
            _fmt(s.get("log_loss")),
            _fmt(second.summary.get("log_loss")),
            f"{ll['diff']:+.4f}",
            f"{ll['ci95'][0]:+.4f} to {ll['ci95'][1]:+.4f}",
        )
    out_console.print(table)
    out_console.print(cmp["verdict"])


@app.command()
def tasks(
    schema: bool = typer.Option(
        False,
        "--schema",
        help="print every key of a task definition, its kinds, default and meaning",
    ),
) -> None:
    """The built-in tasks: how each is scored and where its data comes from. Your own task
    format: docs/tasks.md, or --schema."""
    from ..tasks import list_tasks

    if schema:
        _schema()
        return
    table = Table(
        title="laserkit tasks (your own: a task file, see docs/tasks.md and "
        "`laserkit tasks --schema`)"
    )
    for col in ("task", "kind", "metric", "data", "description"):
        table.add_column(col)
    for t in list_tasks():
        table.add_row(t.name, t.kind, t.metric, t.where(), t.description)
    out_console.print(table)


def _schema() -> None:
    from ..tasks.formats import READERS
    from ..tasks.kinds import declarable, kind_of
    from ..tasks.matching import MATCH_MODES
    from ..tasks.schema import schema_rows

    for section, title in (
        ("task", "task keys (top level of a definition)"),
        (
            "source",
            "source keys (sources.packaged / local / hub, or the top level of a flat task file)",
        ),
    ):
        table = Table(title=title)
        for col in ("key", "kinds", "default", "meaning"):
            table.add_column(col, overflow="fold")
        for sec, key, kinds, default, doc in schema_rows():
            if sec == section:
                table.add_row(key, kinds, default, doc)
        out_console.print(table)
    table = Table(title="reader keys of their own")
    for col in ("reader", "key", "meaning"):
        table.add_column(col)
    for name, fn in READERS.items():
        for key, doc in getattr(fn, "keys", {}).items():
            table.add_row(name, key, doc)
    out_console.print(table)
    table = Table(title="kinds")
    for col in ("kind", "metrics (default first)", "scoring"):
        table.add_column(col)
    for name in declarable():
        kind = kind_of(name)
        table.add_row(name, kind.metrics_doc(), kind.doc)
    out_console.print(table)
    out_console.print(
        "match (generate): "
        + ", ".join(MATCH_MODES)
        + "; answers: a string, a list of accepted strings, a number (compared "
        "as a number), or a dict of parts (all required). See docs/tasks.md.",
        markup=False,
        highlight=False,
    )
