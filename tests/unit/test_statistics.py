"""Intervals on every reported number: each contains its point estimate and matches the textbook values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from gavel.experiments.statistics import bootstrap_interval, mcnemar_test, rate_interval, success_auc


def test_a_rate_gets_wilsons_interval_as_the_issue_quotes_it():
    # transfer 0.240 and Square at budget 100 0.214 at n=196: intervals that overlap, rates not told apart
    transfer, square = rate_interval(47, 196), rate_interval(42, 196)
    assert transfer.method == "wilson"
    assert (round(transfer.low, 3), round(transfer.high, 3)) == (0.185, 0.304)
    assert (round(square.low, 3), round(square.high, 3)) == (0.163, 0.277)
    assert transfer.low < square.high


def test_wilson_matches_its_formula():
    k, n, z = 30, 97, stats.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    interval = rate_interval(k, n)
    assert interval.low == pytest.approx(centre - half) and interval.high == pytest.approx(centre + half)


@pytest.mark.parametrize("k, n", [(0, 97), (1, 97), (4, 50), (96, 97), (97, 97), (0, 1)])
def test_near_0_and_1_the_interval_is_clopper_pearsons_exact_one(k, n):
    interval = rate_interval(k, n)
    assert interval.method == "clopper-pearson"
    low = 0.0 if k == 0 else stats.beta.ppf(0.025, k, n - k + 1)
    high = 1.0 if k == n else stats.beta.ppf(0.975, k + 1, n - k)
    assert interval.low == pytest.approx(low) and interval.high == pytest.approx(high)
    assert k / n in interval


@pytest.mark.parametrize("k, n", [(k, n) for n in (1, 2, 7, 40, 196) for k in range(0, n + 1, max(1, n // 7))])
def test_every_rate_interval_contains_its_point_estimate(k, n):
    interval = rate_interval(k, n)
    assert 0.0 <= interval.low <= k / n <= interval.high <= 1.0


def test_a_rate_of_nothing_is_refused():
    with pytest.raises(ValueError, match="n >= 1"):
        rate_interval(0, 0)


def test_the_area_under_the_success_curve_on_a_log_axis():
    # fooled at query 1 (whole area), at 10 of 100 (half of the log axis left), at 100 (none), never
    success = np.array([True, True, True, False])
    spent = np.array([1, 10, 100, 100])
    assert success_auc(success, spent, 100) == pytest.approx((1.0 + 0.5 + 0.0 + 0.0) / 4)


def test_a_bootstrap_interval_brackets_the_median_and_is_repeatable():
    values = np.random.default_rng(1).integers(1, 1000, 97)
    first = bootstrap_interval(np.median, (values,))
    assert first.low <= np.median(values) <= first.high and first.low < first.high
    assert bootstrap_interval(np.median, (values,)) == first
    same = bootstrap_interval(np.median, (np.full(10, 1000),))
    assert (same.low, same.high) == (1000.0, 1000.0)


def test_mcnemar_uses_only_the_discordant_examples():
    first = np.array([True] * 10 + [False] * 2 + [True] * 30 + [False] * 58)
    second = np.array([False] * 10 + [True] * 2 + [True] * 30 + [False] * 58)
    result = mcnemar_test(first, second)
    assert (result.only_first, result.only_second, result.exact) == (10, 2, True)
    assert result.p_value == pytest.approx(stats.binomtest(2, 12, 0.5).pvalue)
    assert mcnemar_test(first, first).p_value == pytest.approx(1.0)
