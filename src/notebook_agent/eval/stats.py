"""Uncertainty for the report: confidence intervals and a paired test between two runs.

- ABQ is a share of questions right, a binomial proportion: its 95% interval is **Wilson's**
  score interval. Wilson rather than the exact (Clopper-Pearson) one because on the 15-60
  tasks we run its coverage is close to the nominal 95% on average while Clopper-Pearson is
  conservative (wider than needed, often covering 97-99%), and unlike the normal (Wald)
  interval it never collapses to zero width at 0/n or n/n nor leaves [0, 1].
- PSAQ (a mean of per-question fractions) and UASQ (sub-answers pooled, clustered within
  questions) are not binomial: their intervals are percentile bootstraps that resample
  questions (so a question's sub-answers stay together), 2000 resamples, fixed seed, so a
  report is reproducible.
- Two runs over the same tasks are compared on the tasks both scored: `b` = right only in the
  first, `c` = right only in the second. The test is the **exact McNemar** test: under "the
  two settings are equally good" each discordant task is a fair coin, so the two-sided
  p-value is `min(1, 2 * P(X <= min(b, c)))` with `X ~ Binomial(b + c, 1/2)`. Exact because
  with few discordant pairs (often under 10 here) the chi-square approximation is poor.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for k successes in n trials ((0, 1) when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k={k} is not between 0 and n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At k = 0 (k = n) the bound is 0 (1) exactly; rounding would leave it a hair inside the
    # interval, above (below) the point estimate.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def bootstrap_interval(values: Sequence[float], weights: Sequence[float] | None = None,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95% percentile bootstrap of `sum(values) / sum(weights)` resampling items (weights
    default to 1: the plain mean). For UASQ, values are right sub-answers and weights
    sub-answers per question."""
    n = len(values)
    if n == 0:
        return 0.0, 1.0
    w = list(weights) if weights is not None else [1.0] * n
    rng = random.Random(seed)
    stats = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        total_w = sum(w[i] for i in idx)
        stats.append(sum(values[i] for i in idx) / total_w if total_w else 0.0)
    stats.sort()
    return _percentile(stats, 0.025), _percentile(stats, 0.975)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@dataclass
class Paired:
    """Two runs on the tasks both scored: who got which right only, and the test."""

    n_common: int
    both: int
    neither: int
    only_a: list[str]
    only_b: list[str]
    p_value: float

    @property
    def abq_diff(self) -> float:
        """ABQ(b) - ABQ(a) on the common tasks."""
        return (len(self.only_b) - len(self.only_a)) / self.n_common if self.n_common else 0.0


def paired(correct_a: dict[str, bool], correct_b: dict[str, bool]) -> Paired:
    """Compare two runs' per-task verdicts (`{id: correct}`) over the ids both hold."""
    common = sorted(set(correct_a) & set(correct_b))
    only_a = [i for i in common if correct_a[i] and not correct_b[i]]
    only_b = [i for i in common if correct_b[i] and not correct_a[i]]
    both = sum(1 for i in common if correct_a[i] and correct_b[i])
    return Paired(n_common=len(common), both=both, neither=len(common) - both - len(only_a) - len(only_b),
                  only_a=only_a, only_b=only_b, p_value=mcnemar_exact(len(only_a), len(only_b)))
