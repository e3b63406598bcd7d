"""The paper's reproduction mode (`laserkit reproduce TASK`): the reference's protocol in one
command, and which of its numbers can be set beside the paper's Table 1 (docs/search.md,
"Reproducing the paper").

Everything that makes a number comparable is fixed here, not left to options: the plain task
(the reference's data construction, prompts, labels, generation length), no ``--limit`` or
shuffle (the reference's split), rank reduction with the reference's rank and rate rules, the
grid of τ ∈ {fc_in, fc_out}, and the reference's selection (the base model never a candidate).
"""

from __future__ import annotations

from typing import Any

from ..core.errors import LaserkitError

# The paper's tasks and the reference's example counts (docs/methods.md, "The paper's tasks");
# None: the count is not recorded there.
PAPER_TASKS: dict[str, int | None] = {
    "fever": 13_086,
    "bios-gender": 39_642,
    "bios-profession": 19_223,
    "hotpotqa": 14_618,
    "truthfulqa": 5_882,
    "bbh-epistemic": 2_000,
    "bbh-wikidata": 20_321,
    "counterfact": None,
    "counterfact-generate": None,
}
GENERATION = ("hotpotqa", "bbh-wikidata", "counterfact-generate")
# ρ ∈ {0.9, 0.8, 0.6, 0.2, 0.1, 0.05, 0.01} written as the reference's rates, so that each ρ is
# the reference's float ((10 − rate)·0.1), hence its kept rank.
PAPER_RATES = "1,2,4,8,9,9.5,9.9"
PAPER_LNAMES = "fc_in,fc_out"
# The paper's models by (model_type, layers, width) — GPT-J 6B, Llama-2 7B, RoBERTa base — and
# the layers the reference's BIG-bench scripts searched (intervention_*_bbh.py: `for lnum in`).
PAPER_MODELS: dict[tuple[str, int, int], str] = {
    ("gptj", 28, 4096): "GPT-J: layers 27–17",
    ("llama", 32, 4096): "Llama-2: layers 31–27",
    ("roberta", 12, 768): "RoBERTa: layers 11–1",
}


def model_key(config: Any) -> tuple[str, int, int] | None:
    """(model_type, layers, width) of a transformers config, to recognise the paper's models."""
    try:
        n = getattr(config, "num_hidden_layers", None) or config.n_layer
        d = getattr(config, "hidden_size", None) or config.n_embd
        return (str(config.model_type), int(n), int(d))
    except (AttributeError, TypeError, ValueError):
        return None


def check_task(task: str) -> str:
    """Only the plain paper tasks reproduce the paper; the offline subsets are laserkit's."""
    if task not in PAPER_TASKS:
        raise LaserkitError(
            f"reproduce {task!r}: not one of the paper's tasks; use "
            f"{', '.join(PAPER_TASKS)} (with --data FILE offline)"
        )
    return task


def comparability(
    task: str,
    n_available: int | None,
    model: tuple[str, int, int] | None,
    lnum: str,
    rates: str = PAPER_RATES,
) -> tuple[list[str], list[str]]:
    """(what is the paper's protocol, what is not) for a finished reproduction run."""
    same = [
        "data construction, prompts, labels and generation length: the reference's "
        f'(task {task}, docs/methods.md "The paper\'s tasks")',
        "split: validation = the first int(0.2·n) examples, no shuffle, no --limit",
        "kept rank k = int(min(m,n)·ρ), ρ = (10 − rate)·0.1 for rates " + rates,
        "selection: the best intervention by validation accuracy, then log-loss; the base "
        "model is never a candidate",
        "metrics: accuracy; log-loss = −(answer log-prob) / (answer tokens), mean over examples",
    ]
    differ = [
        "SVD: exact (torch.linalg.svd) where the reference used unseeded "
        "torch.svd_lowrank(q=k, niter=2): same rank, but its randomized approximation is "
        "not the best rank-k one and changes from run to run"
    ]
    expected = PAPER_TASKS.get(task)
    if expected is not None and n_available is not None:
        line = f"data: n = {n_available:,}, the reference's {expected:,}"
        (same if n_available == expected else differ).append(
            line
            + (
                ""
                if n_available == expected
                else " — not the paper's data (another release, a filtered file, or one split)"
            )
        )
    if task in GENERATION:
        differ.append(
            "generation: only the generated tokens are judged, the reference decoded "
            "the prompt too, so answers found in the question counted as correct "
            "(docs/methods.md, fix 1)"
        )
    if task in ("counterfact", "counterfact-generate", "truthfulqa"):
        differ.append(
            "split boundary: moved so a group (a fact and its paraphrases, one "
            "question's statements) never straddles it; the reference cut groups"
        )
    differ.append(
        "labels: scored by their full tokenization; the reference used one fixed "
        "token id each (the same for the paper's tokenizers, fix 2)"
    )
    if rates != PAPER_RATES:
        differ.append(f"ρ grid: rates {rates}, not the paper's {PAPER_RATES}")
    if model not in PAPER_MODELS:
        shown = "unknown" if model is None else f"{model[0]}, {model[1]} layers, width {model[2]}"
        differ.append(
            f"model: {shown} is not one of the paper's (GPT-J 6B, Llama-2 7B, "
            "RoBERTa base): Table 1 has no row for it"
        )
    elif lnum == "all":
        differ.append(
            "layers: every layer searched; the reference's BIG-bench scripts searched "
            f"the last ones only ({PAPER_MODELS[model]}), so a layer it never "
            "tried can be chosen (use --lnum to match)"
        )
    return same, differ
