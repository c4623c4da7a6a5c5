"""Uncertainty on every number a run reports: confidence intervals for rates and bootstrap intervals for
medians and curve areas, and McNemar's test for two configurations on the same examples.

- A rate (attack success, robust accuracy) is a count of k successes in n examples: its interval is Wilson's,
  or Clopper-Pearson's exact one near 0 and 1 (fewer than `EXACT_BELOW` successes or failures), where Wilson's
  normal approximation is poorest; both from statsmodels.
- A median of queries and the area under the success-vs-queries curve are bootstrapped over the attacked
  examples (scipy's percentile bootstrap, seeded: the same run gives the same interval).
- Two configurations attacked on the same examples differ in success on the discordant examples only:
  McNemar's test (exact binomial when they are few) from statsmodels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

CONFIDENCE = 0.95
EXACT_BELOW = 5
"""Clopper-Pearson when the successes or the failures number fewer than this (the usual n*p >= 5 rule)."""
RESAMPLES = 2000
EXACT_MCNEMAR_BELOW = 25
"""McNemar's exact binomial test when fewer discordant pairs than this, its chi-square approximation above."""


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


def rate_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """The interval of a rate of `successes` out of `n` (n >= 1)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"a rate needs 0 <= successes <= n and n >= 1; got {successes} of {n}")
    exact = min(successes, n - successes) < EXACT_BELOW
    method = "beta" if exact else "wilson"
    low, high = proportion_confint(successes, n, alpha=1 - confidence, method=method)
    return Interval(float(low), float(high), "clopper-pearson" if exact else "wilson")


def pooled_rate(rates_and_counts: list[tuple[float, float]]) -> tuple[float, int, int, Interval]:
    """Rates measured on several sets of examples (a configuration's seeds), as one: (rate, successes, examples,
    interval), the successes recovered from each rate and its count."""
    hits = sum(round(rate * count) for rate, count in rates_and_counts)
    total = sum(int(count) for _, count in rates_and_counts)
    return hits / total, hits, total, rate_interval(hits, total)


def success_auc(success: np.ndarray, spent: np.ndarray, most: int) -> float:
    """The area under the success-vs-queries curve on a log axis from 1 to `most` queries, as a fraction of
    the whole plot (1: every example fooled by its first query). An example fooled at query s adds
    1 - log(s) / log(most) to the mean; one never fooled (or fooled past `most`) adds 0."""
    if most < 2:
        raise ValueError(f"a curve over queries needs at least 2 queries on its axis; got {most}")
    success = np.asarray(success, dtype=bool)
    spent = np.maximum(np.asarray(spent, dtype=np.float64), 1.0)
    share = np.where(success & (spent <= most), 1.0 - np.log(spent) / math.log(most), 0.0)
    return float(share.mean())


def bootstrap_interval(
    statistic, samples: tuple[np.ndarray, ...], *, confidence: float = CONFIDENCE, seed: int = 0
) -> Interval:
    """A percentile bootstrap interval of `statistic(*samples)`, the examples (the rows shared by `samples`)
    resampled together."""
    n = len(samples[0])
    if n < 1:
        raise ValueError("a bootstrap needs at least one example")
    if n == 1 or all(np.all(s == s[0]) for s in samples):  # nothing varies: every resample gives the same value
        value = float(statistic(*samples))
        return Interval(value, value, "bootstrap")
    result = stats.bootstrap(
        samples,
        statistic,
        paired=True,
        vectorized=False,
        n_resamples=RESAMPLES,
        confidence_level=confidence,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return Interval(float(result.confidence_interval.low), float(result.confidence_interval.high), "bootstrap")


@dataclass(frozen=True)
class McNemar:
    only_first: int
    """Examples the first configuration fooled and the second did not."""
    only_second: int
    p_value: float
    exact: bool


def mcnemar_test(first: np.ndarray, second: np.ndarray) -> McNemar:
    """Whether two configurations' successes on the same examples differ (two-sided)."""
    first, second = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if first.shape != second.shape:
        raise ValueError(f"McNemar's test compares the same examples: {first.shape} against {second.shape}")
    only_first = int((first & ~second).sum())
    only_second = int((~first & second).sum())
    both = int((first & second).sum())
    neither = int((~first & ~second).sum())
    exact = only_first + only_second < EXACT_MCNEMAR_BELOW
    result = mcnemar([[both, only_first], [only_second, neither]], exact=exact, correction=True)
    return McNemar(only_first, only_second, float(result.pvalue), exact)
