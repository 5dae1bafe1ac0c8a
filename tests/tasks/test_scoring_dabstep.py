"""DABStep's published scorer rules, one test (or more) per rule, hand-computed."""

from __future__ import annotations

import pytest

from notebook_agent.tasks.scoring import ScoredItem, get_scorer, summarize
from notebook_agent.tasks.scoring.dabstep import compare_numeric, is_numeric_with_commas, question_scorer
from notebook_agent.tasks.task import Task


def test_case_insensitive_and_trimmed():
    assert question_scorer("  VISA ", "visa")
    assert question_scorer("Not Applicable", "not applicable")


def test_numeric_rounds_to_the_fewer_decimals_shown():
    assert question_scorer("12.3456", "12.35")       # both rounded to 2 places: 12.35
    assert question_scorer("3.14159", "3.14")
    assert not question_scorer("12.4", "12.35")      # rounded to 1 place: 12.4 vs 12.3
    assert not question_scorer("100", "100.4")       # 100.0 vs 100.4 at 1 place
    assert question_scorer("100", "100.0")


def test_numbers_below_one_use_isclose_1e4():
    assert question_scorer("0.12345", "0.1234")      # |diff| 5e-5 <= 1e-4
    assert not question_scorer("0.125", "0.13")      # 5e-3
    assert compare_numeric(0.5, 0.50005)


def test_large_numbers_within_relative_1e4():
    assert compare_numeric(100000.0, 100005.0)       # 5 <= 1e-4 * 100005
    assert not compare_numeric(1000.0, 1001.0)       # 1 > 0.1001


def test_thousands_commas_currency_and_percent():
    assert is_numeric_with_commas("1,234.56") and is_numeric_with_commas("$1,000") and is_numeric_with_commas("0.99")
    assert not is_numeric_with_commas("64")
    assert question_scorer("1,234.56", "1234.56")
    assert question_scorer("$1,000", "1000")
    assert question_scorer("12.5%", "12.5")
    assert question_scorer("The answer is 42", "42")  # first number in the text


def test_official_quirks_are_kept():
    # a thousands-grouped number is a number, not a list, so reordering it is wrong
    assert not question_scorer("234,1", "1,234")
    # '0,99' counts as a decimal shape but its comma is dropped: 99 vs 0.99
    assert not question_scorer("0,99", "0.99")
    # the number pattern has no sign
    assert question_scorer("-5.5", "5.5")


def test_lists_compare_as_sorted_sets():
    assert question_scorer("a, b, c", "c; b; a")
    assert question_scorer("[A, B]", "b, a")
    assert not question_scorer("a, b", "a, b, c")
    # same length but not equal as text: items (sorted) compare pairwise by the same rules
    assert question_scorer("1.50, x", "x, 1.5")
    assert not question_scorer("1.6, x", "x, 1.5")


def test_close_strings_by_difflib_ratio():
    # 27 vs 28 characters, 27 matching: ratio 2*27/55 = 0.982 > 0.95
    assert question_scorer("average fee per transaction", "average fees per transaction")
    # 16 of 19 characters match: ratio 2*16/38 = 0.842
    assert not question_scorer("the quick brown fox", "the quick brown cat")


def test_single_word_side_matches_by_word_subset():
    assert question_scorer("NexPay", "nexpay card")
    assert question_scorer("nexpay card", "NexPay")
    assert not question_scorer("nexpay card", "globalcard card")   # two words each: ratio only
    # one word each: the subset rule decides (and the ratio is never reached)
    assert not question_scorer("merchant_category_code", "merchant_category_codes")


def test_missing_answer_is_wrong():
    assert not question_scorer(None, "1")
    s = get_scorer("dabstep").score(Task(id="1", question="q", answer="Visa"), None)
    assert (s.correct, s.answered, s.n_sub) == (False, False, 1)
    s = get_scorer("dabstep").score(Task(id="1", question="q", answer="Visa"), "  ")
    assert not s.correct and not s.answered


def test_easy_and_hard_reported_apart():
    sc = get_scorer("dabstep")
    rows = [("1", "easy", "12.35", "12.3456"), ("2", "easy", "visa", "mastercard"),
            ("3", "hard", "a, b", "b, a"), ("4", "hard", "7", "7"), ("5", "hard", "x", None)]
    items = [ScoredItem(i, sc.score(Task(id=i, question="q", answer=gold, level=lv), resp), lv)
             for i, lv, gold, resp in rows]
    m = summarize(items)
    assert list(m.by_level) == ["easy", "hard"]
    assert (m.by_level["easy"].n, m.by_level["easy"].abq) == (2, 0.5)
    assert (m.by_level["hard"].n, m.by_level["hard"].abq) == (3, pytest.approx(2 / 3))
    assert m.abq == m.psaq == m.uasq == pytest.approx(3 / 5)
