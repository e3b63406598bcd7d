"""Search on an lm-eval task: the loop a user would write around lm-eval vs `laserkit search`.

(a) the obvious loop: the model loaded once; for every (τ, ℓ, ρ) edit it (a fresh SVD), call
    ``lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=...), tasks=[TASK],
    samples={TASK: validation docs})``, undo the edit; pick the best on validation; then base
    and best on the test docs, the same protocol as laserkit's.
(b) laserkit's engine (laserkit.search.run) on ``lm-eval:TASK``: SVD once per matrix, batched
    scorer, prefix cache, the trial store.

The task is an lm-eval YAML multiple_choice task written here (local JSON data: the first
``--limit`` FEVER claims shipped with laserkit, true/false), so the benchmark needs no network.
Both must choose the same intervention with the same validation accuracy (asserted).

    .venv/bin/python -W ignore bench/bench_lm_eval.py --limit 60 --lnum=-2: --rho 0.05,0.01
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from laserkit import Editor, FactorCache, Intervention, load
from laserkit.eval.evaluate import split_examples
from laserkit.model.targets import model_layout, parse_layers
from laserkit.search import Context, ObjectiveConfig, RunConfig, TrialStore, grid_edits, run
from laserkit.search.store import default_url
from laserkit.search.trial import describe_edit
from laserkit.tasks import get_task
from laserkit.tasks.sources import load_examples

NAME = "bench_fever"


def write_task(folder: Path, limit: int) -> None:
    """An lm-eval multiple_choice YAML task over the first ``limit`` shipped FEVER claims."""
    rows = [
        {"claim": ex.prompt, "choices": list(ex.choices), "label": ex.gold[0]}
        for ex in load_examples(get_task("fever-bigbench"))[:limit]
    ]
    data = folder / "fever.json"
    data.write_text(json.dumps(rows))
    (folder / f"{NAME}.yaml").write_text(
        f"task: {NAME}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{claim}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\n"
        "metric_list:\n  - metric: acc\n"
    )


def obvious_loop(
    loaded, folder: Path, edits: list[list[dict]], val: list[int], test: list[int], batch_size: int
) -> tuple[str, float, float]:
    """(chosen label, its validation acc, seconds) of the simple_evaluate-per-trial loop."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    t0 = time.perf_counter()
    tm = TaskManager(include_path=str(folder))

    def acc(es: list[dict], docs: list[int]) -> float:
        editor = Editor(loaded.model, cache=FactorCache())  # a fresh SVD every trial
        for e in es:
            editor.apply(e["lname"], e["layer"], Intervention.from_dict(e["intervention"]))
        lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)
        res = simple_evaluate(
            model=lm, tasks=[NAME], task_manager=tm, samples={NAME: docs}, log_samples=False
        )
        editor.restore()
        return res["results"][NAME]["acc,none"]

    scores = [(acc(es, val), -i, es) for i, es in enumerate([[]] + edits)]
    best = max(scores, key=lambda s: (s[0], s[1]))  # the first of equals, as laserkit's pick
    acc([], test)
    acc(best[2], test)
    label = ", ".join(map(describe_edit, best[2])) or "base"
    return label, best[0], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--lname", default="fc_in,fc_out")
    ap.add_argument("--lnum", default="-2:")
    ap.add_argument("--rho", default="0.05,0.01")
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    torch.manual_seed(0)
    loaded = load(args.model, dtype="float32", device="cpu")
    layers = parse_layers(args.lnum, model_layout(loaded.model).num_layers)
    rhos = [float(x) for x in args.rho.split(",")]
    iv = Intervention(rho=1.0)
    edits = grid_edits(args.lname.split(","), layers, rhos, iv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_task(folder, args.limit)
        spec = f"lm-eval:{NAME}"
        examples = load_examples(get_task(spec, str(folder)))
        val = [int(e.id.rpartition(":")[2]) for e in split_examples(examples, "validation")]
        test = [int(e.id.rpartition(":")[2]) for e in split_examples(examples, "test")]

        t0 = time.perf_counter()
        objective = ObjectiveConfig(task=spec, data=str(folder), batch_size=args.batch_size)
        cfg = RunConfig(
            strategy="grid",
            model=args.model,
            objective=objective,
            intervention=iv.to_dict(),
            lnames=args.lname.split(","),
            layers=layers,
            rhos=rhos,
            dtype="float32",
        )
        ctx = Context(cfg, loaded.model, loaded.tokenizer)
        store = TrialStore(default_url(folder), "bench", create=cfg)
        result = run(store, ctx=ctx)
        t_search = time.perf_counter() - t0
        chosen, val_acc = result["chosen"]["label"], result["best"]["validation"]["score"]
        print(
            f"laserkit search on {spec}: {len(edits)} trials, {t_search:.1f} s; chosen "
            f"{chosen}, validation acc {val_acc:.4f}; prefix cache {ctx.prefix.stats}",
            flush=True,
        )

        label, ref_acc, t_ref = obvious_loop(loaded, folder, edits, val, test, args.batch_size)
    print(
        f"simple_evaluate(HFLM) per trial: {t_ref:.1f} s; chosen {label}, validation acc "
        f"{ref_acc:.4f}"
    )
    same = label == chosen and abs(ref_acc - val_acc) < 1e-9
    print(f"same choice and validation accuracy: {same}")
    assert same, "the two searches disagree"
    print(f"speed ratio loop / laserkit, whole run: {t_ref / t_search:.2f}x")


if __name__ == "__main__":
    main()
