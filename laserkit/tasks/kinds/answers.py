"""Shared by the kinds whose examples carry answers (generate, next_token)."""

from __future__ import annotations

from ...core.errors import LaserkitError
from .. import matching as M
from ..spec import Example


def check_answers_present(ex: Example, where: str) -> None:
    """At least one non-empty answer (its items are checked by matching.check_answers)."""
    if not ex.answers or any(a is None or a == "" for a in ex.answers):
        raise LaserkitError(f"{where}: needs at least one non-empty answer")


def answers_preview(ex: Example, mode: str, match: str | None = None) -> dict:
    """The answers, their parts, the match mode (generate) and the texts whose log-probability
    is the log-loss, as `eval --dry-run --show` prints them."""
    item: dict = {"answers": list(ex.answers)}
    parts = M.parts_of(ex.answers, mode)
    if parts is not None:
        item["parts"] = parts
    if match is not None:
        item["match"] = match
    item["log_loss_of"] = M.continuations(ex.answers, mode)
    return item
