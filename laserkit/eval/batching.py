"""How rows are cut into batches: fixed numbers of rows, or a token budget (docs/usage.md,
"Batches"). Kept free of torch at import (the CLI checks ``--batch-tokens`` before loading
anything); only sizing a budget from free GPU memory imports it.

The budget counts padded tokens: a batch of rows right- or left-padded to its longest row costs
rows × longest row. "auto" uses AUTO_FRACTION of the free memory of the model's device and
leaves the rest for what ``token_bytes`` does not count (attention scores, the MLP's widening,
the allocator's fragmentation). On a CPU "auto" means no budget: fixed batches of
``batch_size`` rows, measured best there (bench/RESULTS.md, "Evaluation").
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from ..core.errors import LaserkitError

AUTO_FRACTION = 0.5
BatchTokens = int | str | None  # a number of tokens, "auto" (None: the same) or "off"


def parse_batch_tokens(text: str | int | None) -> BatchTokens:
    """--batch-tokens as given: "auto" (None), "off", or a whole number of tokens ≥ 1."""
    if text is None or text == "auto":
        return None
    if text == "off":
        return "off"
    try:
        n = int(text)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(text).strip() != str(n):
        raise LaserkitError(
            f"--batch-tokens {text}: give auto, off, or a whole number of tokens of at least 1"
        )
    return n


def plan_batches(lengths: Sequence[int], batch_size: int | None, budget: int | None) -> list[range]:
    """Consecutive batches of rows, in the given order. Without a budget, ``batch_size`` rows
    each. With one, a batch takes rows while (rows × its longest row) ≤ ``budget`` and rows ≤
    ``batch_size`` (None: no cap); a row longer than the budget is a batch of its own."""
    if budget is None:
        step = batch_size or 1
        return [range(b, min(b + step, len(lengths))) for b in range(0, len(lengths), step)]
    out, b0, longest = [], 0, 0
    for i, n in enumerate(lengths):
        wider = max(longest, n)
        full = batch_size is not None and i - b0 >= batch_size
        if i > b0 and (full or (i - b0 + 1) * wider > budget):
            out.append(range(b0, i))
            b0, wider = i, n
        longest = wider
    if b0 < len(lengths):
        out.append(range(b0, len(lengths)))
    return out


def token_bytes(model: Any) -> int:
    """Memory one token costs in a forward pass: its activations, hidden size × layers × the
    dtype's bytes (every layer's output and its key-value cache), plus its vocabulary logits in
    the model's dtype, their float32 copy and the float32 log-softmax (vocabulary × (bytes +
    8)). Logits are counted for every token, not only the scored span: an upper bound."""
    cfg = getattr(model, "config", None)

    def first(*names: str) -> int:
        return next((int(v) for k in names if isinstance(v := getattr(cfg, k, None), int)), 0)

    hidden = first("hidden_size", "n_embd", "d_model")
    layers = first("num_hidden_layers", "n_layer", "num_layers")
    vocab = first("vocab_size")
    nbytes = next(model.parameters()).element_size()
    return max(1, hidden * layers * nbytes + vocab * (nbytes + 8))


def resolve_batch_tokens(model: Any, batch_tokens: BatchTokens) -> int | None:
    """The token budget in force (None: fixed batches of ``batch_size`` rows). "auto" (None)
    on CUDA: ⌊AUTO_FRACTION × free memory of the model's device / token_bytes(model)⌋, the
    free memory being torch.cuda.mem_get_info's; on any other device no budget."""
    if batch_tokens == "off":
        return None
    if isinstance(batch_tokens, int):
        return batch_tokens
    from ..model.placement import execution_device  # noqa: PLC0415 - torch only when sized

    device = execution_device(model)  # a mapped model's first weight may be on meta
    if device.type != "cuda":
        return None
    import torch  # noqa: PLC0415

    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int(AUTO_FRACTION * free) // token_bytes(model))


def search_batching(
    model: Any, batch_size: int | None, batch_tokens: BatchTokens
) -> tuple[int | None, int | None]:
    """(rows cap, token budget) of a search's scoring: under a budget rows are not capped (a
    run always stores a --batch-size, 16 by default, for where no budget is in force)."""
    budget = resolve_batch_tokens(model, parse_batch_tokens(batch_tokens))
    return (None if budget is not None else batch_size), budget


def note_budget(budget: int, model: Any) -> None:
    """The resolved "auto" budget, on stderr: it depends on the machine's free memory, and a
    different one batches rows differently (numbers then differ in float rounding only)."""
    print(
        f"note: batches of at most {budget} tokens (--batch-tokens auto: "
        f"{AUTO_FRACTION:.0%} of free GPU memory at {token_bytes(model)} bytes a token)",
        file=sys.stderr,
    )
