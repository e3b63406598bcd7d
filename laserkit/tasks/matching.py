"""Is a generated answer right? The matching modes of ``generate`` tasks (docs/tasks.md).

An example's ``answers`` hold the gold answer's items exactly as the data gave them (strings,
numbers, lists, dicts); nothing is turned into text before matching. What the items mean depends
on the task's ``match``:

- ``contains`` (default): any item is found in the generation as whole words — "Left" is not in
  "Leftist" — and numbers compare as numbers ("9" is not in "1995", "11.1" is not "11.11", "3.0"
  is "3"). A dict item is a multi-part answer: every part must be found.
- ``exact``: the normalised generation equals an item.
- ``all_parts``: the items are the parts of one answer (a list, or a dict's values); every part
  must be found as in ``contains``; a part may itself be a list of accepted alternatives.
- ``f1``: SQuAD's official token F1 (max over the items) and, for ``correct``, SQuAD's exact match.
- ``regex``: an item is a Python regular expression searched in the raw generation.
- ``substring``: the LASER reference's rule (``generation_match``: the stripped, lower-cased
  answer is a substring of the stripped, lower-cased generation), kept so the paper's generation
  tasks score as the paper did; it finds "9" in "1995".

Normalisation (contains / exact / all_parts): SQuAD's (lower case, punctuation and the articles
a/an/the removed, whitespace collapsed), except that numbers are read as numbers first.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from decimal import Decimal
from typing import TypeGuard

import regex

from ..core.errors import LaserkitError

REGEX_TIMEOUT_S = 1.0  # per answer and generation; generations are short (max_new_tokens)
MATCH_MODES = ("contains", "exact", "all_parts", "all_pairs", "f1", "regex", "substring")
Item = str | int | float | list | dict

_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = ("a", "an", "the")
# a number: not glued to a word or to a preceding dot; thousands separators allowed
_NUM = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w]|\.\d)")


def normalize_answer(s: str) -> str:
    """SQuAD's normalisation (its official evaluation script): lower case, no punctuation, no
    articles, single spaces."""
    s = s.lower().translate(_PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _number(text: str) -> str:
    """A number's canonical form: "11.10" → "11.1", "1,995" → "1995", "3.0" → "3"."""
    d = Decimal(text.replace(",", "")).normalize()
    return format(d, "f") if d != 0 else "0"


def _words(text: str, articles: bool) -> list[str]:
    s = text.lower().translate(_PUNCT)
    return [w for w in s.split() if articles or w not in _ARTICLES]


def tokens(text: str, articles: bool = False) -> list[str]:
    """Normalised tokens with numbers kept as numbers (canonical decimal form)."""
    out: list[str] = []
    pos = 0
    for m in _NUM.finditer(text):
        out += _words(text[pos : m.start()], articles)
        out.append(_number(m.group()))
        pos = m.end()
    return out + _words(text[pos:], articles)


def item_text(item: Item) -> str:
    """The text an item stands for where text is needed (the log-loss continuation, the F1):
    a string as it is, a number in decimal form, a list of alternatives by its first, a dict's
    parts joined by ", " in order."""
    if isinstance(item, bool):
        raise LaserkitError(f"answer {item!r}: true/false is not an answer; write it as text")
    if isinstance(item, str):
        return item
    if isinstance(item, int | float):
        return _number(repr(item)) if isinstance(item, float) else str(item)
    if isinstance(item, list):
        return item_text(item[0])
    if isinstance(item, dict):
        return ", ".join(item_text(v) for v in item.values())
    raise LaserkitError(f"answer {item!r}: unsupported type {type(item).__name__}")


def _is_scalar(item: object) -> TypeGuard[str | int | float]:
    return isinstance(item, str | int | float) and not isinstance(item, bool)


def _needle(item: str | int | float) -> list[str]:
    """The tokens to look for; an answer that is only an article ("A") keeps it."""
    if not isinstance(item, str):
        return [item_text(item)]
    return tokens(item) or tokens(item, articles=True)


def _check_scalar(item: object, where: str, mode: str) -> None:
    if not _is_scalar(item):
        raise LaserkitError(
            f"{where}: answer {item!r} is not a string or a number (match: "
            f"{mode}; see docs/tasks.md for lists and multi-part answers)"
        )
    if isinstance(item, str) and not item.strip():
        raise LaserkitError(f"{where}: empty answer")
    if mode == "regex":
        try:
            regex.compile(str(item))
        except (regex.error, ValueError) as e:
            raise LaserkitError(
                f"{where}: answer {item!r} is not a valid regular expression ({e})"
            ) from None
    elif mode not in ("f1", "substring") and not _needle(item):
        raise LaserkitError(
            f"{where}: answer {item!r} has no words or numbers to match; use match: regex"
        )


def parts_of(items: tuple, mode: str) -> list[list] | None:
    """The parts of a multi-part answer (each a list of alternatives), or None when the items
    are alternatives of a single answer."""
    if mode == "all_pairs":  # "key: value" per pair, for the log-loss text, F1 and previews
        return [[f"{item_text(k)}: {item_text(a)}" for a in alts] for k, alts in pairs_of(items)]
    if mode == "all_parts":
        flat = [p for it in items for p in (it.values() if isinstance(it, dict) else [it])]
        return [p if isinstance(p, list) else [p] for p in flat]
    if mode == "contains" and len(items) == 1 and isinstance(items[0], dict):
        return [p if isinstance(p, list) else [p] for p in items[0].values()]
    return None


def pairs_of(items: tuple) -> list[tuple[str | int | float, list]]:
    """The (key, accepted values) pairs of dict answers (``match: all_pairs``)."""
    return [
        (k, v if isinstance(v, list) else [v])
        for it in items
        if isinstance(it, dict)
        for k, v in it.items()
    ]


def segments(prediction: str) -> list[str]:
    """The clauses of a generation in which a key and its value must occur together: lines,
    and the pieces between ';', ', ' and '. '."""
    return [p for p in re.split(r"\n|;|,\s|\.\s", prediction) if p.strip()]


def check_answers(items: tuple, mode: str, where: str) -> None:
    """Fail in one line when an example's answer items do not fit the task's match mode."""
    if mode not in MATCH_MODES:
        raise LaserkitError(f"unknown match {mode!r}; use one of {', '.join(MATCH_MODES)}")
    if not items:
        raise LaserkitError(f"{where}: needs at least one answer")
    if mode == "all_pairs":
        if not all(isinstance(it, dict) and it for it in items):
            raise LaserkitError(
                f"{where}: match: all_pairs needs a non-empty dict answer "
                "({key: value, ...}); for plain parts use match: all_parts"
            )
        for key, alternatives in pairs_of(items):
            _check_scalar(key, where, "contains")
            if not alternatives:
                raise LaserkitError(f"{where}: the answer for {key!r} is an empty list")
            for a in alternatives:
                _check_scalar(a, where, "contains")
        return
    parts = parts_of(items, mode)
    if parts is not None:
        for alternatives in parts:
            if not alternatives:
                raise LaserkitError(f"{where}: an answer part is an empty list")
            for a in alternatives:
                _check_scalar(a, where, mode)
        return
    for it in items:
        if isinstance(it, dict):
            raise LaserkitError(
                f"{where}: a multi-part answer (a dict) needs match: all_parts "
                f"or contains, not {mode}"
            )
        if isinstance(it, list):
            raise LaserkitError(
                f"{where}: answer {it!r} is a list inside the list of accepted "
                "answers; for parts use match: all_parts"
            )
        _check_scalar(it, where, mode)


def _contains(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def found(prediction: str, item: str | int | float) -> bool:
    """``item`` occurs in ``prediction`` as whole normalised words / as a number."""
    needle = _needle(item)
    return _contains(tokens(prediction, articles=needle != tokens(item_text(item))), needle)


def squad_f1(prediction: str, gold: str) -> float:
    """SQuAD v1.1's official F1: bag-of-tokens overlap of the normalised texts."""
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(g)
    return 2 * prec * rec / (prec + rec)


def f1_score(prediction: str, items: tuple, mode: str = "contains") -> float:
    """Token F1 against the gold answer: the max over alternatives; a multi-part answer counts
    as the text of all its parts."""
    parts = parts_of(items, mode)
    if parts is not None:
        return squad_f1(prediction, " ".join(item_text(p[0]) for p in parts))
    if mode == "regex":
        return float("nan")
    return max(squad_f1(prediction, item_text(it)) for it in items)


def regex_search(pattern: str, text: str, where: str = "") -> bool:
    """A ``match: regex`` answer searched in a generation, in bounded time: a pattern that
    backtracks catastrophically (``(.+)+\\x00``) would otherwise hang the evaluation."""
    try:
        return regex.search(pattern, text, timeout=REGEX_TIMEOUT_S) is not None
    except TimeoutError:
        raise LaserkitError(
            f"{where or 'an answer'}: regular expression {pattern!r} took over "
            f"{REGEX_TIMEOUT_S:g} s on a {len(text)}-character generation "
            "(catastrophic backtracking); simplify it (no nested repeats such "
            "as (.+)+)"
        ) from None


def judge(prediction: str, items: tuple, mode: str, where: str = "") -> dict:
    """``correct`` (bool) and, for multi-part answers, ``parts_found`` (one bool per part).
    ``where`` names the example in errors (a regular expression too slow to match)."""
    if mode == "all_pairs":  # each key together with one of its values, in one clause
        clauses = segments(prediction)
        hits = [
            any(found(c, key) and any(found(c, a) for a in alts) for c in clauses)
            for key, alts in pairs_of(items)
        ]
        return {"correct": all(hits), "parts_found": hits}
    parts = parts_of(items, mode)
    if parts is not None:
        hits = [any(found(prediction, a) for a in alts) for alts in parts]
        return {"correct": all(hits), "parts_found": hits}
    if mode == "contains":
        return {"correct": any(found(prediction, it) for it in items)}
    if mode == "exact":
        pred = tokens(prediction)
        return {
            "correct": any(
                pred == _needle(it) or (tokens(prediction, True) == _needle(it)) for it in items
            )
        }
    if mode == "f1":
        norm = normalize_answer(prediction)
        return {"correct": any(norm == normalize_answer(item_text(it)) for it in items)}
    if mode == "regex":
        return {"correct": any(regex_search(str(it), prediction, where) for it in items)}
    if mode == "substring":
        gen = prediction.strip().lower()
        return {"correct": any(item_text(it).strip().lower() in gen for it in items)}
    raise LaserkitError(f"unknown match {mode!r}; use one of {', '.join(MATCH_MODES)}")


def continuations(items: tuple, mode: str) -> list[str]:
    """The texts whose log-probability is the example's log-loss (the most likely counts):
    each alternative, or the parts joined by ", "; none for regular expressions."""
    if mode == "regex":
        return []
    parts = parts_of(items, mode)
    if parts is not None:
        return [", ".join(item_text(p[0]) for p in parts)]
    return [item_text(it) for it in items]
