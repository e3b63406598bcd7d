"""The ``lm-eval`` task kind: lm-evaluation-harness tasks (``--task lm-eval:NAME[,NAME...]``)
scored by laserkit (docs/tasks.md, "lm-eval tasks").

lm-eval's ``TaskManager`` builds the tasks (its registry, or the user's YAML under
``--include-path``); its requests are answered by ``laserkit.eval.harness.LaserkitLM``; its filters
and aggregations compute the metrics (``lm_eval.evaluator.evaluate`` does all three). This
file is the task side (names, loading, documents, the selection metric, records); the model
side (``LaserkitLM``, running lm-eval's evaluation) is laserkit/eval/harness.py, reached
through a ``Harness`` request (tasks/requests.py). laserkit
only decides which documents are scored, so its validation/test protocol, the trial store,
resume, workers and the paired statistics apply to a harness task as to its own:

- The documents are each task's evaluation documents as lm-eval scores them (its test split,
  or its validation split when it has no test split; ``eval_docs``). One ``Example`` per
  document, id ``TASK:DOC_ID``.
- Several tasks (a comma list, or a group's subtasks) are interleaved in proportion to their
  sizes, so laserkit's validation (the first 20 %) holds the first 20 % of every task and test
  the rest; a group is scored whole on each split and aggregated by lm-eval's own rule.
- The score is the task's first metric after its first filter (``acc``; ``exact_match,strict-
  match``), a group's first aggregate metric, or for a comma list the mean of those scores.

lm-eval is imported only here and only when such a task is asked for (``laserkit[harness]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ...core.errors import LaserkitError, first_line
from ..requests import Harness, HarnessResults
from ..spec import Example, Task
from .base import Ask, Records, TaskKind

PREFIX = "lm-eval:"
KIND = "lm-eval"
FEWSHOT_SEED = 1234  # simple_evaluate's fewshot_random_seed default
RESULTS_FILE = "lm_eval_results.json"  # eval --out: lm-eval's results JSON
BOOTSTRAP_ITERS = 100000  # simple_evaluate's default (stderr of non-mean metrics)
OFFLINE_HINT = (
    "point the task at a local copy: in your own task YAML (--include-path DIR) set "
    "dataset_path: json and dataset_kwargs: {data_files: {test: FILE}}, or run once "
    "online so that HF_DATASETS_OFFLINE=1 finds it in the cache"
)


def is_lm_eval(name: object) -> bool:
    """Whether a --task value names lm-eval tasks."""
    return isinstance(name, str) and name.startswith(PREFIX)


def task_source(task: str | None, data: str | None, include_path: str | None) -> str | None:
    """The data argument get_task receives: --include-path for an lm-eval task (the directory
    of the user's YAML tasks), else --data."""
    if include_path is None:
        return data
    if not is_lm_eval(task):
        raise LaserkitError("--include-path applies to lm-eval tasks (--task lm-eval:NAME)")
    if data is not None:
        raise LaserkitError("give --include-path or --data, not both")
    return include_path


def task_names(spec: str) -> tuple[str, ...]:
    """``lm-eval:a,b`` → ("a", "b")."""
    names = tuple(n.strip() for n in spec[len(PREFIX) :].split(","))
    if not names or not all(names):
        raise LaserkitError(
            f"--task {spec!r}: name lm-eval tasks as lm-eval:NAME or "
            "lm-eval:NAME1,NAME2 (see `lm_eval ls tasks`)"
        )
    return names


@dataclass
class LmEvalTask(Task):
    """A Task whose documents, requests and metrics are lm-eval's; ``data`` holds the
    --include-path directory (None: lm-eval's own tasks only)."""

    kind: str = KIND
    lower_is_better: bool = field(default=False, metadata={"doc": "", "kinds": KIND})
    generates: bool = field(default=False, metadata={"doc": "", "kinds": KIND})

    def __post_init__(self) -> None:
        task_names(self.name)  # checks the spelling only: loading happens in lm_eval_task
        self.chat_template = "none"  # lm-eval builds the prompt text itself


class Kind(TaskKind):
    """lm-evaluation-harness tasks: named by ``--task lm-eval:NAME``, never by a task file."""

    name = KIND
    doc = "lm-evaluation-harness tasks (--task lm-eval:NAME)"
    declarable = False
    chat = False
    chunked = False  # lm-eval's corpus metrics are not means over documents

    def metrics(self, task: LmEvalTask) -> tuple[str, ...]:
        return (task.metric,) if task.metric else ()

    def default_metric(self, task: LmEvalTask) -> str:
        return task.metric or ""

    def higher_is_better(self, task: LmEvalTask) -> bool:
        return not task.lower_is_better

    def forward_only(self, task: LmEvalTask) -> bool:
        """Generation builds new inputs every pass: no prefix cache then."""
        return not task.generates

    def load(self, task: LmEvalTask) -> list[Example]:
        return _examples(_load(task.name, task.data))

    def where(self, task: LmEvalTask) -> str:
        return "lm-eval TaskManager" + (f", --include-path {task.data}" if task.data else "")

    def evaluate(self, task: LmEvalTask, examples: Sequence[Example], ask: Ask) -> Records:
        """lm-eval scores the documents of ``examples`` with the model as it is now; records per
        document (its metrics and lm-eval's responses, log-likelihoods among them), the summary
        holds the selection metric and lm-eval's ``results`` under ``lm_eval``."""
        loaded = _load(task.name, task.data)
        samples: dict[str, list[int]] = {}
        for ex in examples:
            name, _, doc = ex.id.rpartition(":")
            samples.setdefault(name, []).append(int(doc))
        (answer,) = ask([Harness(_subset(loaded, samples), samples)])
        assert isinstance(answer, HarnessResults)
        res = answer.results
        mains = {n: _main_metric(loaded, n)[0] for n in loaded["names"]}
        metric = task.metric or ""
        records = _records(res, mains, metric)
        values = [res["results"].get(n, {}).get(k, math.nan) for n, k in mains.items()]
        score = sum(values) / len(values)
        summary = {
            metric: score,
            **{f"{n}/{_short(k)}": v for (n, k), v in zip(mains.items(), values, strict=True)},
            "lm_eval": answer.results_json,
        }
        return records, summary


def lm_eval_task(spec: str, include_path: str | None = None) -> LmEvalTask:
    """The task a ``--task lm-eval:...`` value names; its data is read here (lm-eval builds a
    task with its dataset), so a missing task or dataset fails before a model is loaded."""
    if include_path is not None:
        path = Path(include_path).expanduser()
        if not path.is_dir():
            raise LaserkitError(
                f"--include-path {include_path}: not a directory (give the "
                "directory holding your lm-eval task YAML files)"
            )
        include_path = str(path.resolve())
    loaded = _load(spec, include_path)
    metric, lower, generates = _selection(loaded)
    return LmEvalTask(
        name=spec,
        description="lm-evaluation-harness: " + ", ".join(task_names(spec)),
        data=include_path,
        metric=metric,
        lower_is_better=lower,
        generates=generates,
    )


@lru_cache(maxsize=8)
def _load(spec: str, include_path: str | None) -> dict:
    """lm-eval's TaskManager.load of the names, set up as simple_evaluate sets them up (0-shot
    unless the task says otherwise, its few-shot seed); cached: building reads the datasets."""
    try:
        from lm_eval.tasks import TaskManager  # noqa: PLC0415 - the harness extra, on demand
    except ImportError:
        raise LaserkitError(
            "lm-eval tasks need lm-evaluation-harness: pip install 'laserkit[harness]'"
        ) from None
    names = task_names(spec)
    tm = TaskManager(include_path=include_path)
    unknown = [n for n in names if n not in tm.all_tasks]
    if unknown:
        where = (
            f" or under --include-path {include_path}"
            if include_path
            else " (your own YAML tasks: --include-path DIR)"
        )
        raise LaserkitError(
            f"unknown lm-eval task {', '.join(unknown)}: not in lm-eval's registry{where}"
        )
    loaded: dict = {"names": names, "tasks": {}, "groups": {}, "group_map": {}}
    for name in names:
        try:
            part = tm.load([name])
        except Exception as e:  # noqa: BLE001 - datasets raise many kinds; one line for all
            raise LaserkitError(
                f"lm-eval task {name}: its data cannot be read "
                f"({_dataset_of(tm, name)}): {first_line(e)[:200]}; "
                f"{OFFLINE_HINT}"
            ) from None
        for key in ("tasks", "groups", "group_map"):
            loaded[key].update(part[key])
    for task in loaded["tasks"].values():
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=FEWSHOT_SEED)
    return loaded


def _dataset_of(tm, name: str) -> str:
    """The dataset a task names (for the one-line error), when the index can tell."""
    entry = tm.task_index.get(name)
    path = getattr(entry, "yaml_path", None)
    if path is None:
        return "dataset unknown"
    try:
        import yaml  # noqa: PLC0415

        cfg = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return f"config {path}"
    return f"dataset_path {cfg.get('dataset_path', '?')}, from {path}"


def _examples(loaded: dict) -> list[Example]:
    """One Example per evaluation document, tasks interleaved by relative position (the first
    documents of every task first), so that any leading fraction holds that fraction of each."""
    keyed = []
    for order, (name, task) in enumerate(loaded["tasks"].items()):
        n = len(task.eval_docs)
        keyed += [(i / n, order, Example(id=f"{name}:{i}")) for i in range(n)]
    return [ex for _, _, ex in sorted(keyed, key=lambda k: (k[0], k[1]))]


def _main_metric(loaded: dict, name: str) -> tuple[str, bool]:
    """(``metric,filter`` key of lm-eval's results, lower is better) that scores one name."""
    if name in loaded["groups"]:
        aggs = loaded["groups"][name].aggregate_metric_list or []
        if not aggs:
            raise LaserkitError(
                f"lm-eval group {name} reports no aggregate metric: name its "
                "tasks instead (lm-eval:A,B averages them)"
            )
        agg = aggs[0]
        filt = (agg.filter_list or ["none"])[0]
        first = loaded["groups"][name].get_all_tasks()[0]
        return f"{agg.metric},{filt}", not first._higher_is_better.get(agg.metric, True)
    task = loaded["tasks"][name]
    metric = next(iter(task._metric_fn_list))
    return f"{metric},{task._filters[0].name}", not task._higher_is_better.get(metric, True)


def _selection(loaded: dict) -> tuple[str, bool, bool]:
    """The selection metric's name (lm-eval's ``acc,none`` shown as ``acc``; ``mean_`` for a
    comma list), whether lower is better, whether any task generates."""
    mains = [_main_metric(loaded, n) for n in loaded["names"]]
    if len({lower for _, lower in mains}) > 1:
        raise LaserkitError(
            "these lm-eval tasks disagree on whether higher is better: average "
            "tasks whose metrics point the same way"
        )
    keys = {_short(k) for k, _ in mains}
    name = keys.pop() if len(keys) == 1 else "score"
    generates = any(
        t.get_config("output_type") == "generate_until" for t in loaded["tasks"].values()
    )
    return (name if len(mains) == 1 else f"mean_{name}"), mains[0][1], generates


def _short(key: str) -> str:
    return key[: -len(",none")] if key.endswith(",none") else key


def _subset(loaded: dict, samples: dict[str, list[int]]) -> dict:
    """The loaded tasks that have documents in this split (lm-eval scores every document of a
    task it is given without a sample list), and the groups whose tasks all have some."""
    tasks = {n: t for n, t in loaded["tasks"].items() if n in samples}
    groups = {
        n: g
        for n, g in loaded["groups"].items()
        if all(t.task_name in tasks for t in g.get_all_tasks())
    }
    return {
        "tasks": tasks,
        "groups": groups,
        "group_map": {n: loaded["group_map"][n] for n in groups},
    }


def _records(res: dict, mains: dict[str, str], metric: str) -> list[dict]:
    """One record per document: id, task, doc_id, target, lm-eval's responses and per-document
    metric values (``metric`` or ``metric,filter``), and the selection metric's value."""
    main_of = _leaf_mains(res, mains)
    out: dict[str, dict] = {}
    for task, logged in (res.get("samples") or {}).items():
        for s in logged:
            rid = f"{task}:{s['doc_id']}"
            rec = out.setdefault(
                rid,
                {
                    "id": rid,
                    "task": task,
                    "doc_id": s["doc_id"],
                    "target": plain(s["target"]),
                    "resps": plain(s["resps"]),
                },
            )
            filt = s["filter"]
            rec.setdefault("filtered_resps", {})[filt] = plain(s["filtered_resps"])
            for m in s["metrics"]:
                rec[m if filt == "none" else f"{m},{filt}"] = plain(s[m])
            key = main_of.get(task)
            if key is not None and _short(key) in rec and metric not in rec:
                value = rec[_short(key)]
                rec[metric] = value if isinstance(value, (int, float)) else None
    return list(out.values())


def _leaf_mains(res: dict, mains: dict[str, str]) -> dict[str, str]:
    """Each leaf task's key of the selection metric (a group's subtasks use the group's)."""
    out = {}
    for name, key in mains.items():
        for leaf in (res.get("group_subtasks") or {}).get(name) or [name]:
            out[leaf] = key
    return out


def plain(v):
    """JSON-ready: tuples → lists, numpy scalars → Python numbers."""
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if hasattr(v, "item") and callable(v.item):
        return v.item()
    return v if isinstance(v, (str, int, float, bool)) or v is None else str(v)
