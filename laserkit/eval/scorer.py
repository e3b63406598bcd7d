"""One scorer interface, two models: a ``Scorer`` answers the requests a task kind makes
(tasks/requests.py) with a model as it is now. ``CausalScorer`` (scoring.py) answers them with
a causal LM; ``MaskedScorer`` (masked.py) with a masked LM, at mask positions as the LASER
reference's RoBERTa scripts score. ``evaluate`` picks the scorer from the model's type and the
kind never knows which one answered.

A scorer answers each request type with one method (``loglikelihood``, ``next_token``,
``generate``, ``perplexity``, ``cosines``, ``harness``); a type it cannot answer is refused
before any work, by ``check``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from ..core.errors import LaserkitError
from ..tasks import requests as R
from ..tasks.kinds import TaskKind

METHODS: dict[type, str] = {
    R.Loglikelihood: "loglikelihood",
    R.NextToken: "next_token",
    R.Generate: "generate",
    R.Perplexity: "perplexity",
    R.Cosines: "cosines",
    R.Harness: "harness",
}


@dataclass(frozen=True)
class Settings:
    """How an evaluation scores, whichever model answers: batching, progress, the context and
    generation lengths, the semantic score's embedder, the chat template and system prompt in
    force, and what goes between a raw prompt and its answer."""

    batch_size: int | None = 4  # most rows per batch (None: no cap under a token budget)
    batch_tokens: int | None = None  # the token budget in force (None: fixed batch_size rows)
    progress: bool = False
    max_len: int = 2048
    max_new_tokens: int = 15
    embedder: str = "minilm"
    chat_template: str = "none"
    system_prompt: str | None = None
    answer_prefix: str = " "

    @property
    def chat(self) -> bool:
        return self.chat_template != "none"

    def system(self, own: str | None) -> str | None:
        """The system turn: the example's own (a dataset's system field, as orca_dpo_pairs'),
        else the task's or the caller's system prompt."""
        return own if own is not None else self.system_prompt


class Scorer:
    """A model that answers task kinds' requests. Subclasses implement the methods named in
    ``METHODS`` for the request types they answer, and ``accepts`` for the models they take."""

    what: ClassVar[str] = "this model"

    def __init__(self, model: nn.Module, tokenizer: Any, settings: Settings) -> None:
        self.model, self.tokenizer, self.settings = model, tokenizer, settings

    @classmethod
    def accepts(cls, model: nn.Module) -> bool:
        raise NotImplementedError

    def check(self, kind: TaskKind) -> None:
        """Refuse, in one line, a kind whose requests this scorer cannot answer."""

    def answer(self, requests: Sequence[Any]) -> list[Any]:
        """The answers to requests of one type, in order."""
        if not requests:
            return []
        kinds = {type(r) for r in requests}
        if len(kinds) > 1 or type(requests[0]) not in METHODS:
            raise LaserkitError(
                f"internal: cannot answer requests of types {sorted(map(str, kinds))}"
            )
        method = getattr(self, METHODS[type(requests[0])], None)
        if method is None:
            raise LaserkitError(f"{self.what} cannot answer {type(requests[0]).__name__} requests")
        return method(list(requests))
