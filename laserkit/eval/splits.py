"""The validation/test rule, once (docs/methods.md): validation is the first ⌊0.2·n⌋ examples
(the reference's ``int(0.2 * n)``, at least one), moved to the end of a group the boundary cuts
(a fact and its paraphrases, one TruthfulQA question's statements); test is the rest. ``seed``
shuffles whole groups first. ``evaluate`` splits examples by it and a search's objectives
(search/objective.py) split their items by it, so a run's validation is evaluate's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from ..core.errors import LaserkitError
from ..tasks.spec import Example

SPLITS = ("all", "validation", "test")
VALIDATION_FRACTION = 0.2


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise LaserkitError(f"unknown split {split!r}: use {', '.join(SPLITS)}")


def n_validation(n: int) -> int:
    """The reference's validation size, int(0.2·n) (at least one example when there are any)."""
    return max(1, math.floor(VALIDATION_FRACTION * n)) if n else 0


def split_range(n: int, split: str) -> range:
    """Indices of a split of n ungrouped items: validation the first 20%, test the rest."""
    check_split(split)
    n_val = n_validation(n)
    return {"validation": range(0, n_val), "test": range(n_val, n), "all": range(n)}[split]


def _grouped(items: Sequence[Example]) -> list[list[Example]]:
    """Consecutive runs of examples that share a group (ungrouped examples stand alone)."""
    out: list[list[Example]] = []
    for ex in items:
        if out and ex.group and out[-1][0].group == ex.group:
            out[-1].append(ex)
        else:
            out.append([ex])
    return out


def shuffle_examples(examples: Sequence[Example], seed: int | None) -> list[Example]:
    """A seeded shuffle that moves whole groups (a fact and its paraphrases stay together and
    in order), so no group can straddle the validation/test boundary under --seed either."""
    groups = _grouped(examples)
    if seed is not None:
        random.Random(seed).shuffle(groups)
    return [ex for g in groups for ex in g]


def split_examples(
    examples: Sequence[Example], split: str = "all", seed: int | None = None
) -> list[Example]:
    """``validation`` = the first ⌊0.2·n⌋ examples (the reference's ``int(0.2 * n)``),
    extended to the end of the group the boundary falls in, so that items that belong together
    never straddle the split; ``test`` = the rest; ``all`` = everything. ``seed`` shuffles
    whole groups (deterministically) first. The splits are disjoint and cover every example."""
    check_split(split)
    items = shuffle_examples(examples, seed)
    n_val = n_validation(len(items))
    while (
        0 < n_val < len(items)
        and items[n_val].group
        and items[n_val].group == items[n_val - 1].group
    ):
        n_val += 1
    return items[:n_val] if split == "validation" else items[n_val:] if split == "test" else items
