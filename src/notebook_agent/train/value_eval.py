"""How good is a value model? AUC and calibration of its scores on held-out states.

A state is positive when its target is above 0 (the attempt or subtree it leads to got at
least one sub-answer right). States of one attempt share its outcome and are correlated, so
the AUC's interval comes from a bootstrap over attempts (clusters), not over states.

Beside the model, a heuristic needing no training: "the latest tool result is not an error".
A value model that does not beat it has learned nothing the search does not already see.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .value_data import ValueExample

DEPTHS = (1, 3, 5)
ERROR_MARKERS = ("Traceback (most recent call last)", "Error:", "Rejected:")


def auc(scores: list[float], positive: list[bool]) -> float | None:
    """Area under the ROC curve (Mann-Whitney; ties count one half). None without both classes."""
    pos = [s for s, y in zip(scores, positive) if y]
    neg = [s for s, y in zip(scores, positive) if not y]
    if not pos or not neg:
        return None
    ranked = sorted(scores)
    # average ranks (1-based) with ties
    rank: dict[float, float] = {}
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1] == ranked[i]:
            j += 1
        rank[ranked[i]] = (i + j) / 2 + 1
        i = j + 1
    r_pos = sum(rank[s] for s in pos)
    return (r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def cluster_resamples(clusters: list[str], n: int, seed: int) -> Iterator[list[int]]:
    """n bootstrap resamples of the states' indices, drawing whole clusters (attempts)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(clusters):
        groups[c].append(i)
    keys = list(groups)
    rng = random.Random(seed)
    for _ in range(n):
        yield [i for k in rng.choices(keys, k=len(keys)) for i in groups[k]]


def _interval(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return values[int(0.025 * len(values))], values[min(len(values) - 1, int(0.975 * len(values)))]


def cluster_bootstrap_auc(scores: list[float], positive: list[bool], clusters: list[str], n: int = 1000,
                          seed: int = 0) -> tuple[float, float] | None:
    """95% percentile interval of the AUC, resampling whole clusters (attempts)."""
    values = [a for idx in cluster_resamples(clusters, n, seed)
              if (a := auc([scores[i] for i in idx], [positive[i] for i in idx])) is not None]
    return _interval(values) if len(values) >= n // 2 else None


def paired_auc_difference(a: list[float], b: list[float], positive: list[bool], clusters: list[str],
                          n: int = 1000, seed: int = 0) -> dict[str, Any] | None:
    """AUC(a) - AUC(b) on the same states, with a 95% interval from one cluster bootstrap
    (the same resampled attempts for both), and the share of resamples where a is not better."""
    diffs = []
    for idx in cluster_resamples(clusters, n, seed):
        y = [positive[i] for i in idx]
        x, z = auc([a[i] for i in idx], y), auc([b[i] for i in idx], y)
        if x is not None and z is not None:
            diffs.append(x - z)
    whole_a, whole_b = auc(a, positive), auc(b, positive)
    if whole_a is None or whole_b is None or len(diffs) < n // 2:
        return None
    return {"difference": whole_a - whole_b, "ci": list(_interval(diffs)),
            "p_not_better": sum(d <= 0 for d in diffs) / len(diffs)}


def calibration(scores: list[float], targets: list[float], bins: int = 5) -> list[dict[str, Any]]:
    """Scores binned over [-1, 1]: mean score, mean target and the share of positive states."""
    out = []
    for b in range(bins):
        lo, hi = -1 + 2 * b / bins, -1 + 2 * (b + 1) / bins
        idx = [i for i, s in enumerate(scores) if lo <= s < hi or (b == bins - 1 and s == hi)]
        if idx:
            out.append({"bin": [round(lo, 2), round(hi, 2)], "n": len(idx),
                        "mean_score": sum(scores[i] for i in idx) / len(idx),
                        "mean_target": sum(targets[i] for i in idx) / len(idx),
                        "positive_rate": sum(targets[i] > 0 for i in idx) / len(idx)})
    return out


def last_output_ok(messages: list[dict[str, Any]]) -> float:
    """The heuristic baseline: 1 when the latest tool result shows no error, else -1."""
    for m in reversed(messages):
        if m.get("role") == "tool":
            text = str(m.get("content") or "")
            return -1.0 if any(k in text for k in ERROR_MARKERS) else 1.0
    return 0.0


def _summary(scores: list[float], examples: list[ValueExample], bootstrap: int, seed: int) -> dict[str, Any]:
    positive = [e.target > 0 for e in examples]
    res: dict[str, Any] = {"auc": auc(scores, positive)}
    ci = cluster_bootstrap_auc(scores, positive, [e.tree for e in examples], bootstrap, seed) if bootstrap else None
    res["auc_ci"] = list(ci) if ci else None
    res["mse"] = sum((s - e.target) ** 2 for s, e in zip(scores, examples)) / len(examples)
    return res


def evaluate_scores(scores: list[float], examples: list[ValueExample], depths: tuple[int, ...] = DEPTHS,
                    bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The report for given scores: overall, at each depth in `depths` (and deeper ones pooled
    under `>last`), calibration bins."""
    if len(scores) != len(examples) or not examples:
        raise ValueError("need one score per example, and at least one example")
    report: dict[str, Any] = {"states": len(examples), "positive": sum(e.target > 0 for e in examples),
                              "attempts": len({e.tree for e in examples}),
                              **_summary(scores, examples, bootstrap, seed), "by_depth": {},
                              "calibration": calibration(scores, [e.target for e in examples])}
    for d in depths:
        idx = [i for i, e in enumerate(examples) if e.depth == d]
        if idx:
            sub = [examples[i] for i in idx]
            report["by_depth"][str(d)] = {"states": len(idx), "positive": sum(e.target > 0 for e in sub),
                                          **_summary([scores[i] for i in idx], sub, bootstrap, seed)}
    return report


def evaluate_value(score: Callable[[list[list[dict[str, Any]]]], list[float]], examples: list[ValueExample],
                   depths: tuple[int, ...] = DEPTHS, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The value model's report beside the error heuristic's, on the same states."""
    scores = score([e.messages for e in examples])
    heuristic = [last_output_ok(e.messages) for e in examples]
    positive, clusters = [e.target > 0 for e in examples], [e.tree for e in examples]
    return {"model": evaluate_scores(scores, examples, depths, bootstrap, seed),
            "heuristic_last_output_ok": evaluate_scores(heuristic, examples, depths, bootstrap, seed),
            "model_minus_heuristic": paired_auc_difference(scores, heuristic, positive, clusters, bootstrap, seed)
            if bootstrap else None,
            "scores": [{"state": e.tree, "depth": e.depth, "target": e.target, "score": s}
                       for e, s in zip(examples, scores)]}
