"""What a task kind asks of a model, and what it gets back (lm-evaluation-harness's split: a
task emits requests, a model interface answers them). Task kinds (kinds/*.py) build these
requests from examples and turn the answers into records; the scorers in laserkit/eval/ (causal
and masked models, one interface: eval/scorer.py) answer them. Plain data: no torch here, so
that reading a task never imports it.

Every list of requests of one type is answered in one call, in order, batched as the scorer
sees fit; answers are Python numbers and strings, never tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Loglikelihood:
    """Each continuation scored after the prompt: its summed log-probability and token count
    (docs/methods.md: the answer is tokenized on its own and continues the prompt)."""

    prompt: str
    continuations: tuple[str, ...]
    system: str | None = None  # the example's own system turn; None: the evaluation's


@dataclass(frozen=True)
class Scores:
    """A ``Loglikelihood`` answered: per continuation, Σ log p and the number of its tokens;
    ``truncated`` when the prompt lost tokens to fit the context."""

    logprobs: list[float]
    n_tokens: list[int]
    truncated: bool = False


@dataclass(frozen=True)
class NextToken:
    """The rank of the answer's first token among the model's next-token predictions after the
    prompt (CounterFact), with the log-loss of the most likely continuation."""

    prompt: str
    continuations: tuple[str, ...]
    system: str | None = None


@dataclass(frozen=True)
class Ranked:
    """A ``NextToken`` answered: 1 + the number of tokens above the answer's, the top token as
    text, the log-loss (−Σ log p / tokens of the most likely continuation)."""

    rank: int
    prediction: str
    log_loss: float
    truncated: bool = False


@dataclass(frozen=True)
class Generate:
    """Greedy generation after the prompt; answered by the generated text."""

    prompt: str
    system: str | None = None


@dataclass(frozen=True)
class Perplexity:
    """The log-likelihood of a whole text: ``sliding`` windows of ``length`` tokens moved by
    ``stride`` (None: the defaults), or laserRMT's ``fixed`` chunks of ``length`` tokens.
    ``where`` names the task in errors."""

    text: str
    chunking: str
    length: int | None
    stride: int | None
    where: str


@dataclass(frozen=True)
class Windows:
    """A ``Perplexity`` answered: per window (or chunk) Σ log p and the scored tokens, per
    chunk its mean loss (fixed), the text's token count and the window settings in force."""

    sums: list[float]
    counts: list[int]
    chunk_losses: list[float]
    n_tokens: int
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cosines:
    """Semantic score: the embedding cosine of ``text`` with ``chosen`` and with ``rejected``."""

    text: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class Similarity:
    """A ``Cosines`` answered, with the embedder that made the embeddings."""

    chosen: float
    rejected: float
    embedder: str


@dataclass(frozen=True)
class Harness:
    """lm-evaluation-harness tasks (already built) scored on some of their documents; answered
    by lm-eval's results with per-sample logs, and its results file as ``lm_eval`` writes it."""

    tasks: dict
    samples: dict[str, list[int]]


@dataclass(frozen=True)
class HarnessResults:
    results: dict
    results_json: dict


Request = Loglikelihood | NextToken | Generate | Perplexity | Cosines | Harness
