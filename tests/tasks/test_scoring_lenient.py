"""JUPITER's tolerant comparisons: available by name, never the default."""

from __future__ import annotations

from notebook_agent.tasks.scoring import DEFAULT_SCORER, get_scorer
from notebook_agent.tasks.scoring.lenient import compare_values, jupiter_is_equal, parse_items
from notebook_agent.tasks.task import Task


def t(answer) -> Task:
    return Task(id="1", question="q", answer=answer)


def test_lenient_scorers_are_never_defaults():
    assert not {"dabench_jupiter", "dabench_lenient"} & set(DEFAULT_SCORER.values())


def test_jupiter_empty_values_match_each_other():
    assert jupiter_is_equal("None", "nan")
    assert jupiter_is_equal(None, "")               # a missing sub-answer matches an empty gold
    assert not jupiter_is_equal(None, "0")


def test_jupiter_numbers_decide_alone_and_lists_are_ordered():
    assert not jupiter_is_equal("1.1", "1.0")       # floats parse: no list fallback
    assert jupiter_is_equal("1.0, 2", "1, 2.0")
    assert jupiter_is_equal("'a', 'b'", "a, b")
    assert not jupiter_is_equal("2, 1", "1, 2")


def test_jupiter_scorer_versus_official():
    task = t([["a", "1, 2"], ["b", ""]])
    response = "@a[1.0, 2.0]"
    official = get_scorer("dabench").score(task, response)
    jupiter = get_scorer("dabench_jupiter").score(task, response)
    assert (official.n_right, jupiter.n_right) == (0, 2)


def test_lenient_parse_keeps_nested_brackets_and_spaced_names():
    assert parse_items("@a[[2, 1]] and @mean fare[3.5]") == {"a": [2, 1], "mean fare": 3.5}
    assert parse_items("@a[] @[1]") == {}


def test_lenient_relative_tolerance():
    # |diff| = 0.05 >= 1e-3, but 0.05 / 200.05 = 2.5e-4 < 1e-3
    assert compare_values(100.05, 100)
    assert compare_values(3.14, 3.1416)
    assert not compare_values(1.0, 1.01)            # 0.01 / 2.01 = 5e-3
    assert not compare_values("Yes", "yes")


def test_lenient_unordered_lists_and_dicts():
    assert compare_values([2, 1], [1, 2])
    assert not compare_values([1, 1], [1, 2])
    assert compare_values({"x": 1.0}, {"x": 1})


def test_lenient_scorer_on_a_task():
    task = t([["a", "100"], ["b", "[1, 2]"], ["c", "yes"]])
    s = get_scorer("dabench_lenient").score(task, "@a[100.05] @b[[2, 1]] @c[Yes]")
    assert (s.n_right, s.n_sub, s.correct) == (2, 3, False)
    assert get_scorer("dabench").score(task, "@a[100.05] @b[[2, 1]] @c[Yes]").n_right == 0
