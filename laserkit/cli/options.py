"""CLI options: those several commands share, declared once (search, greedy, compose, compare,
reproduce, status, report: the bottom of this file), and those generated from the intervention
kinds' fields (docs/interventions.md).

``@intervention_options(...)`` replaces one parameter of a typer command (``iv`` by default) by
``--intervention`` (when several kinds are offered), one option per field of the offered kinds
(flag, type, default and help from ``interventions.option``) and ``--rate`` beside ``--rho``; the
command is then called with the one ``Intervention`` they describe. An option of another kind
given with a value other than its default is refused in one line (``--bandwidth`` with
rank-reduction), before the command does any work. A kind registered before the command module
is imported gets its options there too.

    @app.command()
    @intervention_options(kinds=("mp-threshold",))
    def greedy(model: str = ModelArg, iv: Intervention = FROM_OPTIONS, ...) -> None:
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import typer

from ..core.errors import LaserkitError
from ..interventions import KINDS, Intervention, kind_class
from ..interventions.base import field_map

FROM_OPTIONS: Any = None  # the default of the parameter the options replace
SWEPT = "rho"  # the field a search sweeps (its grid axis): not an option in sweep mode
PLACEHOLDER_RHO = 1.0  # sweep mode: the template's ρ, replaced by each value of the grid


@dataclasses.dataclass
class _Opt:
    name: str
    flag: str
    help: str
    type: type
    default: Any
    owners: list[str]
    alias_of: str | None = None  # --rate: converted into this field


def _cli_default(f: dataclasses.Field, typ: type) -> Any:
    d = f.default
    if typ is str and isinstance(d, float):
        return format(d, "g")  # a number offered as text ('median' or a number): "1", not "1.0"
    return d


def collect(kinds: Sequence[str], sweep: bool = False) -> list[_Opt]:
    """The options of the kinds' fields, in kind then field order, one per field name."""
    opts: dict[str, _Opt] = {}
    for kind in kinds:
        for f in field_map(kind_class(kind)).values():
            if sweep and f.name == SWEPT:
                continue
            m = f.metadata
            if f.name in opts:
                _agree(opts[f.name], kind, f)
                opts[f.name].owners.append(kind)
                continue
            opts[f.name] = _Opt(
                f.name, m["flag"], m["help"], m["type"], _cli_default(f, m["type"]), [kind]
            )
            alias = m.get("alias")
            if alias is not None:
                opts[alias.name] = _Opt(
                    alias.name, alias.flag, alias.help, float, None, [kind], alias_of=f.name
                )
    for o in opts.values():
        if alias_owner := o.alias_of:
            o.owners = opts[alias_owner].owners
    return list(opts.values())


def _agree(o: _Opt, kind: str, f: dataclasses.Field) -> None:
    """One field name, one CLI option: a kind whose field has another kind's name must have its
    flag and type (checked here, where the options meet, so that listing kinds imports none)."""
    if (f.metadata["flag"], f.metadata["type"]) != (o.flag, o.type):
        raise TypeError(
            f"{kind}'s field {f.name!r} differs from {o.owners[0]}'s field of that name "
            "(flag or type): one name, one CLI option"
        )


def build(kind: str, values: dict[str, Any], opts: list[_Opt], sweep: bool = False) -> Intervention:
    """One Intervention from the options' values (as ``collect`` made them). In sweep mode a
    kind with a ρ gets ``PLACEHOLDER_RHO``: the search replaces it by each value it tries."""
    spec = kind_class(kind)
    own = set(field_map(spec))
    values = dict(values)
    for o in opts:
        if o.alias_of is None:
            continue
        given = values.pop(o.name, None)
        if given is None:
            continue
        if o.alias_of not in own:
            raise LaserkitError(f"{o.flag} applies to {', '.join(o.owners)}, not to {kind}")
        if values.get(o.alias_of) is not None:
            target = next(x.flag for x in opts if x.name == o.alias_of)
            raise LaserkitError(f"give {o.flag} or {target}, not both")
        values[o.alias_of] = _convert(o, given)
    if sweep and SWEPT in own:
        values[SWEPT] = PLACEHOLDER_RHO
    return Intervention(kind=kind, **values)


def _convert(o: _Opt, value: Any) -> Any:
    spec = kind_class(o.owners[0])
    f = next(f for f in field_map(spec).values() if f.name == o.alias_of)
    return f.metadata["alias"].to_field(value)


def _help(o: _Opt, kinds: Sequence[str]) -> str:
    return o.help if len(o.owners) == len(kinds) else f"{', '.join(o.owners)}: {o.help}"


def intervention_options(
    kinds: Sequence[str] | None = None,
    *,
    sweep: bool = False,
    default_kind: str | None = None,
    param: str = "iv",
    kind_help: str | None = None,
    why: str = "",
) -> Callable[[Callable], Callable]:
    """Decorator for a typer command: its ``param`` parameter becomes the options of ``kinds``
    (default: every registered kind) and receives the Intervention they describe.

    ``sweep``: the command sweeps ρ itself (search, compose: ``--rho`` is its own list option),
    so ρ is not generated and the Intervention is a template with ``PLACEHOLDER_RHO``;
    ``default_kind``: ``--intervention``'s default (the first kind otherwise); with one kind
    there is no ``--intervention``; ``why``: added to the line refusing a kind not offered.
    Put it under ``@app.command()``."""

    def deco(fn: Callable) -> Callable:
        offered = list(kinds) if kinds is not None else KINDS.names()
        for k in offered:
            kind_class(k)
        opts = collect(offered, sweep)
        sig = inspect.signature(fn)
        if param not in sig.parameters:
            raise TypeError(f"{fn.__name__} has no parameter {param!r} to replace")
        clash = {o.name for o in opts} & set(sig.parameters) | (
            {"intervention"} & set(sig.parameters) if len(offered) > 1 else set()
        )
        if clash:
            raise TypeError(
                f"{fn.__name__}: parameters {sorted(clash)} clash with generated "
                "intervention options"
            )
        first = default_kind or offered[0]
        new: list[inspect.Parameter] = []
        if len(offered) > 1:
            new.append(
                inspect.Parameter(
                    "intervention",
                    inspect.Parameter.POSITIONAL_OR_KEYWORD,
                    annotation=str,
                    default=typer.Option(
                        first,
                        "--intervention",
                        help=kind_help
                        or "what to do to each matrix: "
                        f"{', '.join(offered)} (docs/interventions.md)",
                    ),
                )
            )
        for o in opts:
            new.append(
                inspect.Parameter(
                    o.name,
                    inspect.Parameter.POSITIONAL_OR_KEYWORD,
                    annotation=o.type,
                    default=typer.Option(o.default, o.flag, help=_help(o, offered)),
                )
            )
        params = []
        for p in sig.parameters.values():
            params.extend(new if p.name == param else [p])

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kind = kwargs.pop("intervention", first)
            if kind not in offered:
                what = (
                    f"--intervention {kind} does not apply here"
                    if kind in KINDS
                    else f"unknown intervention {kind!r}"
                )
                raise LaserkitError(f"{what}: use one of {', '.join(offered)}{why}")
            values = {o.name: kwargs.pop(o.name) for o in opts if o.name in kwargs}
            kwargs[param] = build(kind, values, opts, sweep)
            return fn(*args, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        annotations = {k: v for k, v in fn.__annotations__.items() if k != param}
        annotations.update({p.name: p.annotation for p in new})
        wrapper.__annotations__ = annotations
        return wrapper

    return deco


# The options several commands share: one declaration each, so a flag's name, default and help
# read the same in every command that offers it.
SearchModelArg = typer.Argument("default", help="hub id, model directory, .gguf, or 'default'")
TaskOpt = typer.Option(
    None,
    "--task",
    "--score",
    help="task to score: fever, bbh-epistemic, "
    "truthfulqa, perplexity (with --data), dpo-semantic, or a task file",
)
DataOpt = typer.Option(None, "--data", help="data file for the task (e.g. text for perplexity)")
FinalEvalOpt = typer.Option(
    None,
    "--final-eval",
    help="after the run, score the base and the "
    "chosen model on these tasks too (e.g. lm-eval:arc_easy,hellaswag): "
    "result.json and the report, with paired 95% CIs",
)
IncludeOpt = typer.Option(
    None,
    "--include-path",
    help="lm-eval tasks (--task lm-eval:NAME): a directory of your own lm-eval task YAML files",
)
LimitOpt = typer.Option(None, "--limit", help="use only the first N examples (before the split)")
MaxNewOpt = typer.Option(
    None,
    "--max-new-tokens",
    help="generation length for tasks that "
    "generate (default: the task's; dpo-semantic 512, laserRMT's); stored "
    "with the run",
)
RunDirOpt = typer.Option(
    None,
    "--run-dir",
    "-o",
    help="where this machine writes the result, "
    "report and best model (default runs/<run>, or runs/<command>-<task>)",
)
RunOpt = typer.Option(
    None,
    "--run",
    help="the run's name in the database (default: the run "
    "directory's name); several runs share one database by name",
)
ResumeOpt = typer.Option(False, "--resume", help="continue the run (after a crash or Ctrl-C)")
StorageOpt = typer.Option(
    None,
    "--storage",
    help="trial database URL (default sqlite:///RUN_DIR/"
    "trials.db; postgresql://USER:PW@HOST/DB for several machines)",
)
BatchOpt = typer.Option(
    16, "--batch-size", help="examples per forward pass where no token budget is in force"
)
BATCH_TOKENS_HELP = (
    "tokens per forward pass (rows × longest row): auto (from free GPU memory on CUDA; off on "
    "a CPU), off (fixed --batch-size rows), or a number (docs/usage.md, Batches)"
)
BatchTokensOpt = typer.Option("auto", "--batch-tokens", help=BATCH_TOKENS_HELP)
SHUFFLE_HELP = (
    "shuffle the examples with this seed before the split (default: none, the paper's "
    "first-20%-validation split)"
)
ShuffleOpt = typer.Option(None, "--shuffle", "--seed", help=SHUFFLE_HELP)
ShuffleOnlyOpt = typer.Option(None, "--shuffle", help=SHUFFLE_HELP)  # --seed is the command's
NoCacheOpt = typer.Option(
    False,
    "--no-prefix-cache",
    help="recompute layers before ℓ in every trial (results are the same; slower)",
)
CacheGbOpt = typer.Option(
    1.0,
    "--cache-gb",
    help="memory for cached hidden states, on each device that holds blocks; beyond it "
    "batches are recomputed",
)
NoSaveOpt = typer.Option(
    False, "--no-save", help="do not save the chosen model into RUN_DIR/best-model"
)
WorkersOpt = typer.Option(
    1,
    "--workers",
    help="worker processes on this machine (one per GPU "
    "when there are GPUs; one with --device map); more join with `laserkit worker URL --run "
    "NAME`; 0: only create the run in the database",
)
HeartbeatOpt = typer.Option(5, "--heartbeat", help="seconds between a running trial's heartbeats")
GraceOpt = typer.Option(
    20,
    "--grace",
    help="a worker silent this many seconds is taken for dead and its trial given to another",
)
SourceArg = typer.Argument(..., help="a run directory, or the database URL (with --run)")
