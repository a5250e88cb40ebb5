"""Statistics over seeds as in the paper: mean/std/95% CI, ANOVA, Kruskal-Wallis, Tukey HSD
with the simultaneous 95% interval of each difference, and Hedges' g as the effect size.

Pure functions over ``{model: [value per seed]}``; no files, no training.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from scipy import stats


def describe(values: list[float]) -> dict:
    """Mean, sample std, n and the 95% confidence half-width of the mean (Student t); the
    spread and the interval are None for one value."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        return {"mean": float(x.mean()), "std": None, "n": n, "ci95": None}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))
    return {"mean": float(x.mean()), "std": std, "n": n, "ci95": half}


def _testable(groups: dict[str, list[float]]) -> str | None:
    """Why the tests cannot run on these groups, or None."""
    if len(groups) < 2:
        return "needs at least two models"
    if any(len(v) < 2 for v in groups.values()):
        return "needs at least two seeds per model"
    if all(np.ptp(v) == 0 for v in groups.values()):
        if len({v[0] for v in groups.values()}) == 1:
            return "all values are identical"
        return "no spread within any model"  # F and t are infinite: no test to speak of
    return None


def _omnibus(name: str, test, groups: dict[str, list[float]]) -> dict:
    reason = _testable(groups)
    if reason:
        return {"test": name, "skipped": reason}
    res = test(*groups.values())
    return {"test": name, "statistic": float(res.statistic), "p": float(res.pvalue)}


def anova(groups: dict[str, list[float]]) -> dict:
    return _omnibus("one-way ANOVA", stats.f_oneway, groups)


KRUSKAL_RESAMPLES = 9999


def kruskal(groups: dict[str, list[float]]) -> dict:
    """Kruskal-Wallis H with its p-value by permutation: exact where the assignments of the
    values to the groups number at most ``KRUSKAL_RESAMPLES``, else that many seeded draws.
    The chi-square approximation is unreliable with a few seeds per model (two models of
    three seeds: 0.0495 where the exact p is 0.1)."""

    def test(*samples):
        def h(*s, axis):
            return stats.kruskal(*s, axis=axis).statistic

        res = stats.permutation_test(samples, h, permutation_type="independent",
                                     vectorized=True, n_resamples=KRUSKAL_RESAMPLES,
                                     alternative="greater", rng=0)
        return SimpleNamespace(statistic=stats.kruskal(*samples).statistic, pvalue=res.pvalue)

    return _omnibus("Kruskal-Wallis", test, groups)


def tukey(groups: dict[str, list[float]], alpha: float = 0.05) -> dict:
    """Pairwise Tukey HSD: mean difference (first minus second), p-value, significance."""
    reason = _testable(groups)
    if reason:
        return {"test": "Tukey HSD", "skipped": reason}
    names = list(groups)
    res = stats.tukey_hsd(*groups.values())
    interval = res.confidence_interval(1 - alpha)
    pairs = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            p = float(res.pvalue[i, j])
            pairs.append(
                {
                    "a": names[i],
                    "b": names[j],
                    "diff": float(res.statistic[i, j]),
                    "ci": [float(interval.low[i, j]), float(interval.high[i, j])],
                    "p": p,
                    "significant": p < alpha,
                    **hedges_g(groups[names[i]], groups[names[j]]),
                }
            )
    return {"test": "Tukey HSD", "alpha": alpha, "pairs": pairs}


def hedges_g(a: list[float], b: list[float]) -> dict:
    """Hedges' g of mean(a) - mean(b) (Cohen's d with the small-sample correction) and its
    approximate 95% interval (normal, with Hedges and Olkin's standard error); None where
    both groups have no spread."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = len(x), len(y)
    pooled = math.sqrt(((n1 - 1) * x.var(ddof=1) + (n2 - 1) * y.var(ddof=1)) / (n1 + n2 - 2))
    if pooled == 0:
        return {"g": None, "g_ci": None}
    g = (x.mean() - y.mean()) / pooled * (1 - 3 / (4 * (n1 + n2) - 9))
    se = math.sqrt((n1 + n2) / (n1 * n2) + g * g / (2 * (n1 + n2)))
    return {"g": float(g), "g_ci": [float(g - 1.96 * se), float(g + 1.96 * se)]}


def welch(a: list[float], b: list[float]) -> dict:
    """mean(a) - mean(b) with Welch's t-test (unequal variances): the p-value and the 95%
    interval of the difference, with Hedges' g; for one configuration against another.
    Without spread in either, the interval and p are None."""
    diff = float(np.mean(a) - np.mean(b))
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return {"diff": diff, "ci": None, "p": None, **hedges_g(a, b)}
    res = stats.ttest_ind(a, b, equal_var=False)
    interval = res.confidence_interval(0.95)
    return {
        "diff": diff,
        "ci": [float(interval.low), float(interval.high)],
        "p": float(res.pvalue),
        **hedges_g(a, b),
    }
