"""InfiAgent-DABench's official rules, each with a hand-computed expectation."""

from __future__ import annotations

import json

import pytest
from benchdata import DABENCH_DEV

from notebook_agent.tasks.loaders import load_benchmark
from notebook_agent.tasks.scoring import ScoredItem, get_scorer, scorer_for, summarize
from notebook_agent.tasks.scoring.dabench import extract_answers, is_equal
from notebook_agent.tasks.task import Task

DEV = DABENCH_DEV
needs_dev = pytest.mark.skipif(not (DEV / "labels.jsonl").exists(), reason=f"dabench-dev data not present at {DEV}")


def task(answer, tid="t", level="easy", concepts=()) -> Task:
    return Task(id=tid, question="q", answer=answer, level=level, concepts=list(concepts), benchmark="dabench")


def score(answer, response):
    return get_scorer("dabench").score(task(answer), response)


# --- parsing ---------------------------------------------------------------------------------
def test_parse_items_anywhere_in_text():
    assert extract_answers("The mean is @mean_fare[34.65] and @n[891].") == {"mean_fare": "34.65", "n": "891"}


def test_nested_brackets_stop_at_first_closing_bracket():
    assert extract_answers("@a[[1, 2]]") == {"a": "[1, 2"}
    s = score([["a", "[1, 2]"]], "@a[[1, 2]]")
    assert not s.correct and s.details["predicted"] == {"a": "[1, 2"}


def test_repeated_name_last_occurrence_wins():
    assert extract_answers("@a[1] then corrected: @a[2]") == {"a": "2"}
    assert score([["a", "2"]], "@a[1] @a[2]").correct
    assert not score([["a", "1"]], "@a[1] @a[2]").correct


def test_value_does_not_cross_newlines_and_names_are_word_characters():
    assert extract_answers("@a[1\n2]") == {}
    assert extract_answers("@mean-fare[3]") == {}
    assert extract_answers("@mean fare[3]") == {}
    assert extract_answers("@x_1[ok]") == {"x_1": "ok"}


def test_empty_values():
    assert extract_answers("@a[]") == {"a": ""}
    assert score([["a", ""]], "@a[]").correct          # equal strings
    assert not score([["a", "0"]], "@a[]").correct     # float('') fails


# --- comparison ------------------------------------------------------------------------------
def test_float_tolerance_is_strictly_below_1e6():
    assert is_equal("1.5000001", "1.5")        # |diff| = 1e-7
    assert not is_equal("1.50001", "1.5")      # 1e-5
    assert not is_equal("0.000001", "0")       # exactly 1e-6 is not < 1e-6
    assert is_equal("34.65", "34.650")         # different strings, same float


def test_scientific_notation():
    assert is_equal("1.2e-4", "0.00012")
    assert is_equal("0.00012", "1.2E-4")
    assert is_equal("1e3", "1000")
    assert not is_equal("1e3", "100")


def test_whitespace_only_numbers_tolerate_it():
    # the official code does not strip: float() ignores surrounding spaces, == does not
    assert score([["a", "1.5"]], "@a[ 1.5 ]").correct
    assert not score([["a", "yes"]], "@a[ yes]").correct
    assert score([["a", "yes"]], "@a[yes]").correct


def test_strings_are_case_sensitive_and_nan_only_matches_itself_as_text():
    assert not is_equal("True", "true")
    assert is_equal("nan", "nan")             # equal strings
    assert not is_equal("NaN", "nan")         # nan - nan is nan, never < 1e-6
    assert not is_equal(None, "1")


def test_non_string_gold_values_compare_as_floats():
    assert score([["a", 3]], "@a[3.0]").correct


# --- missing answers and sub-answer fractions --------------------------------------------------
def test_missing_sub_answer_counts_wrong():
    s = score([["a", "1"], ["b", "2"]], "@a[1]")
    assert (s.correct, s.n_right, s.n_sub, s.fraction) == (False, 1, 2, 0.5)
    assert s.details["correctness"] == {"a": True, "b": False}


@pytest.mark.parametrize("response", [None, ""])
def test_no_response_is_unanswered_and_all_wrong(response):
    s = score([["a", "1"], ["b", "2"]], response)
    assert (s.correct, s.n_right, s.n_sub, s.answered) == (False, 0, 2, False)


def test_repeated_gold_name_keeps_last_value():
    s = score([["a", "1"], ["a", "2"]], "@a[2]")
    assert s.correct and s.n_sub == 1


def test_gold_as_string_of_items():
    s = score("@a[1] @b[x]", "@b[x] @a[1.0]")
    assert s.correct and s.n_sub == 2


def test_task_without_gold_is_unscored():
    assert not score(None, "@a[1]").scored


# --- metrics -----------------------------------------------------------------------------------
def test_abq_psaq_uasq_hand_computed():
    sc = get_scorer("dabench")
    items = [
        ScoredItem("1", sc.score(task([["a", "1"], ["b", "2"]]), "@a[1] @b[2]"), "easy", ["Stats"]),   # 2/2
        ScoredItem("2", sc.score(task([["a", "1"], ["b", "2"]]), "@a[1] @b[3]"), "hard", ["Stats", "ML"]),  # 1/2
        ScoredItem("3", sc.score(task([["c", "x"]]), None), "hard", ["ML"]),                            # missing
    ]
    m = summarize(items)
    assert m.n == 3 and m.n_answered == 2
    assert m.abq == pytest.approx(1 / 3)
    assert m.psaq == pytest.approx((1 + 0.5 + 0) / 3)
    assert m.uasq == pytest.approx(3 / 5)
    assert list(m.by_level) == ["easy", "hard"]
    assert (m.by_level["hard"].n, m.by_level["hard"].abq, m.by_level["hard"].psaq) == (2, 0.0, 0.25)
    assert m.by_level["hard"].uasq == pytest.approx(1 / 3)
    assert m.by_concept["Stats"].abq == 0.5 and m.by_concept["ML"].n == 2 and m.by_concept["ML"].abq == 0.0
    # the official script's denominator: questions without a response are left out
    skip = summarize(items, missing="skip")
    assert (skip.n, skip.abq, skip.psaq, skip.uasq) == (2, 0.5, 0.75, 0.75)


def test_official_scorers_are_the_defaults():
    assert scorer_for("dabench").name == "dabench"
    assert scorer_for("nbqa").name == "dabench"
    assert scorer_for("dabstep").name == "dabstep"


@needs_dev
def test_dabench_dev_gold_labels_score_100_percent():
    result = load_benchmark(f"dabench:{DEV}")
    assert len(result.tasks) == 60 and not result.errors
    labels = {str(json.loads(l)["id"]): json.loads(l)["common_answers"] for l in (DEV / "labels.jsonl").open()}
    sc = get_scorer("dabench")
    items = []
    for t in result.tasks:
        response = "Answer: " + ", ".join(f"@{n}[{v}]" for n, v in labels[t.id])
        items.append(ScoredItem(t.id, sc.score(t, response), t.level, t.concepts))
    m = summarize(items)
    assert (m.n, m.abq, m.psaq, m.uasq) == (60, 1.0, 1.0, 1.0)
    assert {k: g.n for k, g in m.by_level.items()} == {"easy": 20, "medium": 20, "hard": 20}
    # and dropping one sub-answer of every multi-answer question lowers exactly those
    items = []
    for t in result.tasks:
        pairs = labels[t.id][:-1] if len(labels[t.id]) > 1 else labels[t.id]
        items.append(ScoredItem(t.id, sc.score(t, " ".join(f"@{n}[{v}]" for n, v in pairs)), t.level))
    multi = sum(len(v) > 1 for v in labels.values())
    assert summarize(items).abq == pytest.approx((60 - multi) / 60)
