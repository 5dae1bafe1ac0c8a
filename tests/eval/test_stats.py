"""The report's interval and paired-test arithmetic against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from notebook_agent.eval.stats import bootstrap_interval, mcnemar_exact, paired, wilson_interval


@pytest.mark.parametrize(("k", "n", "lo", "hi"), [
    # textbook Wilson 95% intervals (e.g. Newcombe 1998, table I; Brown, Cai & DasGupta 2001)
    (0, 10, 0.0, 0.2775),
    (5, 10, 0.2366, 0.7634),
    (8, 10, 0.4902, 0.9433),
    (10, 10, 0.7225, 1.0),
    (6, 6, 0.6097, 1.0),
])
def test_wilson_interval_matches_hand_computed_values(k: int, n: int, lo: float, hi: float):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-5)


def test_wilson_interval_holds_its_estimate_exactly_at_the_ends():
    """At k = 0 the lower bound is exactly 0 (and at k = n the upper exactly 1): rounding must
    not leave the bound past the estimate, or error bars built from it turn negative."""
    for n in range(1, 200):
        assert wilson_interval(0, n)[0] == 0.0
        assert wilson_interval(n, n)[1] == 1.0
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            assert lo <= k / n <= hi


def test_wilson_interval_by_formula():
    # 3 of 20 by hand: p = .15, z^2 = 3.8415; centre = (.15 + z^2/40) / (1 + z^2/20)
    z2 = 1.959963984540054 ** 2
    centre = (0.15 + z2 / 40) / (1 + z2 / 20)
    half = math.sqrt(z2) * math.sqrt(0.15 * 0.85 / 20 + z2 / 1600) / (1 + z2 / 20)
    assert wilson_interval(3, 20) == pytest.approx((centre - half, centre + half))
    assert wilson_interval(3, 20) == pytest.approx((0.0524, 0.3604), abs=5e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


@pytest.mark.parametrize(("b", "c", "p"), [
    (0, 0, 1.0),                 # no discordant pair: nothing to tell apart
    (1, 6, 2 * (1 + 7) / 128),   # 2 * P(X <= 1), X ~ Bin(7, 1/2) = 0.125
    (0, 5, 2 / 32),              # 0.0625: five tasks one way and none the other is not p < .05
    (0, 6, 2 / 64),              # 0.03125
    (2, 8, 2 * (1 + 10 + 45) / 1024),  # 0.109375
    (3, 3, 1.0),                 # 2 * 42/64 > 1 is capped
    (9, 1, 2 * (1 + 10) / 1024),  # symmetric in b and c
])
def test_exact_mcnemar_matches_hand_computed_values(b: int, c: int, p: float):
    assert mcnemar_exact(b, c) == pytest.approx(p)
    assert mcnemar_exact(c, b) == pytest.approx(p)


def test_paired_counts_discordant_tasks_on_common_ids_only():
    a = {"1": True, "2": True, "3": False, "4": False, "5": True, "x": True}
    b = {"1": True, "2": False, "3": True, "4": False, "5": False, "y": False}
    p = paired(a, b)
    assert p.n_common == 5 and p.both == 1 and p.neither == 1
    assert p.only_a == ["2", "5"] and p.only_b == ["3"]
    assert p.p_value == pytest.approx(1.0)          # 2 * P(X <= 1 | n=3) = 2 * 4/8
    assert p.abq_diff == pytest.approx(-1 / 5)


def test_bootstrap_interval_is_reproducible_and_brackets_the_estimate():
    assert bootstrap_interval([0.5] * 7) == pytest.approx((0.5, 0.5))
    values = [1, 0, 0.5, 1, 0, 1, 0.25, 0.75, 1, 0]
    lo, hi = bootstrap_interval(values)
    assert (lo, hi) == bootstrap_interval(values)    # fixed seed
    assert 0 <= lo < sum(values) / len(values) < hi <= 1
    # weighted (UASQ): 2 of 4 sub-answers and 0 of 1 -> pooled 2/5; every resample lies in [0, 2/3]
    lo, hi = bootstrap_interval([2, 0, 2], [4, 1, 4])
    assert 0 <= lo <= 4 / 9 <= hi <= 0.5
