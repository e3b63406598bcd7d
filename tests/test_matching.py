"""Answer matching for generated text, one test per mode on hand-made records whose right
answer is known, and SQuAD's F1 against an independent copy of its official algorithm."""

from __future__ import annotations

import re
import string
from collections import Counter

import pytest

from laserkit.core.errors import LaserkitError
from laserkit.tasks.matching import check_answers, continuations, f1_score, judge


def _ok(prediction: str, answers: tuple, mode: str) -> bool:
    check_answers(answers, mode, "test")
    return judge(prediction, answers, mode)["correct"]


# (generation, answer items, right?) for the default mode
CONTAINS = [
    ("It happened in 1995.", ("9",), False),  # a number is not part of another number
    ("It happened in 1995.", (1995,), True),
    ("It happened in 1995.", ("1995",), True),  # a numeric string is a number too
    ("The record was 11.11 seconds", ("11.1",), False),
    ("The record was 11.11 seconds", (11.11,), True),
    ("about 11.10 m", (11.1,), True),  # 11.10 == 11.1
    ("3.0 apples", (3,), True),
    ("1,995 people", (1995,), True),
    ("a Leftist view", ("Left",), False),  # whole words only
    ("turn Left here", ("left",), True),
    ("comedy and parody.", ("Parody",), True),
    ("The Eiffel Tower, in Paris", ("eiffel tower",), True),
    ("Eiffel is a tower", ("Eiffel Tower",), False),  # words in order, contiguous
    ("I think it's Paris, France!", ("Lyon", "paris france"), True),  # any accepted answer
    ("Answer: A", ("A",), True),  # an answer that is only an article keeps it
    ("Answer: B", ("A",), False),
    ("Paris and Lyon", ({"a": "Paris", "b": ["Lugdunum", "Lyon"]},), True),  # dict: all parts
    ("Paris only", ({"a": "Paris", "b": ["Lugdunum", "Lyon"]},), False),
]


@pytest.mark.parametrize("prediction,answers,right", CONTAINS)
def test_contains_whole_words_and_numbers(prediction, answers, right):
    assert _ok(prediction, answers, "contains") is right


@pytest.mark.parametrize(
    "prediction,answers,right",
    [
        ("The Paris.", ("paris",), True),
        ("Paris, France", ("paris",), False),
        ("11.10", (11.1,), True),
        ("11.11", ("11.1",), False),
        ("  an apple ", ("Apple", "pear"), True),
    ],
)
def test_exact_after_normalisation(prediction, answers, right):
    assert _ok(prediction, answers, "exact") is right


def test_all_parts_requires_every_part():
    parts = ("Paris", ["Geneva", "Genève"], 2002)  # a list answer under all_parts: its parts
    assert judge("Paris to Genève since 2002", parts, "all_parts") == {
        "correct": True,
        "parts_found": [True, True, True],
    }
    assert judge("Paris to Geneva since 20021", parts, "all_parts") == {
        "correct": False,
        "parts_found": [True, True, False],
    }
    dict_answer = ({"from": "Paris", "to": "Geneva"},)
    assert judge("from Geneva", dict_answer, "all_parts")["parts_found"] == [False, True]
    assert continuations(parts, "all_parts") == ["Paris, Geneva, 2002"]
    # the same list under contains is a list of alternatives: one is enough
    assert judge("only Paris", parts[:1] + ("Lyon",), "contains") == {"correct": True}


def _normalize(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _official_squad_f1(prediction: str, ground_truth: str) -> float:
    """SQuAD v1.1 evaluate-v1.1.py, written out again here (independent of laserkit)."""
    normalize = _normalize
    p, g = normalize(prediction).split(), normalize(ground_truth).split()
    common = Counter(p) & Counter(g)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision, recall = 1.0 * num_same / len(p), 1.0 * num_same / len(g)
    return (2 * precision * recall) / (precision + recall)


@pytest.mark.parametrize(
    "prediction,answers",
    [
        ("the Eiffel tower", ("Eiffel Tower in Paris",)),
        ("Denver Broncos won", ("Denver Broncos", "The Broncos")),
        ("It was 11.11 s", ("11.1",)),
        ("", ("x",)),
        ("a b a b c", ("b a c c", "c")),
        ("The Broncos!", ("Denver Broncos", "broncos")),
    ],
)
def test_f1_is_squads_and_takes_the_best_answer(prediction, answers):
    want = max(_official_squad_f1(prediction, a) for a in answers)
    assert f1_score(prediction, answers, "f1") == pytest.approx(want, abs=1e-12)
    em = any(_normalize(prediction) == _normalize(a) for a in answers)  # SQuAD's exact match
    assert judge(prediction, answers, "f1")["correct"] is em


def test_regex_on_the_raw_generation():
    assert _ok("The answer is 42.", (r"\b4\d\b",), "regex")
    assert not _ok("The answer is 420.", (r"\b4\d\b",), "regex")
    assert not _ok("PARIS", ("Paris",), "regex") and _ok("PARIS", ("(?i)paris",), "regex")
    with pytest.raises(LaserkitError, match="not a valid regular expression"):
        check_answers(("(unclosed",), "regex", "rec 1")


def test_substring_is_the_laser_references_rule():
    # generation_match in the reference: answer.strip().lower() in generation.strip().lower()
    for gen, ans in [
        ("It was 1995.", "9"),
        ("a Leftist view", "Left"),
        ("11.11", "11.1"),
        ("Paris", "pari"),
        ("PARIS!", " paris "),
    ]:
        assert _ok(gen, (ans,), "substring") is (ans.strip().lower() in gen.strip().lower())
    assert not _ok("Lyon", ("Paris",), "substring")


@pytest.mark.parametrize(
    "answers,mode,match",
    [
        ((True,), "contains", "not a string or a number"),
        (({"a": "x"},), "exact", "needs match: all_parts or contains"),
        ((["a", "b"],), "contains", "for parts use match: all_parts"),
        (("",), "contains", "empty answer"),
        (("?!",), "contains", "no words or numbers"),
        ((), "contains", "at least one answer"),
        (("x",), "fuzzy", "unknown match 'fuzzy'"),
    ],
)
def test_answers_that_do_not_fit_the_mode_are_refused(answers, mode, match):
    with pytest.raises(LaserkitError, match=match):
        check_answers(answers, mode, "rec 1")
