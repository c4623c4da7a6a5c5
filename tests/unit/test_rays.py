"""RayS (gavel's own, labels only): exact accounting, budgets spent in full, every submitted input within eps,
and more success with a larger budget."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.accounting import RowCounter, attackable, make_oracle

from gavel.attacks.base import AttackerKit
from gavel.attacks.query.rays import RayS
from gavel.targets.access import AttackerClient
from gavel.targets.training import predict_labels


@pytest.fixture(scope="module")
def judge_and_data(digits):
    return digits.judge, digits.data, *attackable(digits.judge, digits.data, 80, 40)


def run(attack, judge, data, budget, x, y, output="label"):
    oracle = make_oracle(judge, data, output=output, budget=budget, planned=len(x))
    with RowCounter(judge) as counter:
        result = attack.run(x, y, AttackerKit(client=AttackerClient(oracle)))
    return result, oracle, counter


def success(attack, judge, result, x, y) -> float:
    labels = predict_labels(judge, result.x_adv)
    return float((attack.goal.fooled(labels, y) & attack.goal.within(result.x_adv, x)).mean())


@pytest.mark.parametrize("output", ["label", "probabilities"])
@pytest.mark.parametrize("budget", [1, 5, 80])
def test_every_query_is_counted_and_every_budget_spent(judge_and_data, budget, output):
    """Proves: the judge's rows, the Oracle's count and the attack's report agree; no example goes over its
    budget; every example not fooled spent all of it; and what is submitted lies within eps."""
    judge, data, x, y = judge_and_data
    attack = RayS(eps=0.1)
    x, y = x[:12], y[:12]
    result, oracle, counter = run(attack, judge, data, budget, x, y, output)
    assert counter.rows == oracle.queries_total == int(result.queries.sum()) > 0
    assert result.queries.max() <= budget
    assert [oracle.queries(i) for i in range(len(x))] == result.queries.tolist()
    unfooled = result.queries_to_success < 0
    assert np.all(result.queries[unfooled] == budget)
    assert result.x_adv.dtype == np.float32 and result.x_adv.min() >= 0.0 and result.x_adv.max() <= 1.0
    assert attack.goal.within(result.x_adv, x).all()
    seen = ~unfooled
    if seen.any():
        assert np.all(predict_labels(judge, result.x_adv[seen]) != y[seen])


def test_the_hierarchy_restarts_so_an_unlimited_run_still_ends(judge_and_data):
    """Proves: past the finest level of blocks RayS starts over (it keeps asking), and with an unlimited budget
    `max_queries` ends it: an 8x8 input has 7 levels, about 130 block checks, far fewer than 600 queries."""
    judge, data, x, y = judge_and_data
    result, oracle, counter = run(RayS(eps=0.1, max_queries=600), judge, data, None, x[:4], y[:4])
    assert counter.rows == oracle.queries_total == int(result.queries.sum())
    assert np.all(result.queries[result.queries_to_success < 0] == 600)


def test_same_seed_same_run(judge_and_data):
    judge, data, x, y = judge_and_data
    first, _, asked_first = run(RayS(eps=0.1), judge, data, 50, x[:5], y[:5])
    second, _, asked_second = run(RayS(eps=0.1), judge, data, 50, x[:5], y[:5])
    np.testing.assert_array_equal(np.stack(asked_first.inputs), np.stack(asked_second.inputs))
    np.testing.assert_array_equal(first.x_adv, second.x_adv)


def test_success_rises_with_the_budget(judge_and_data):
    """Proves: RayS fools the judge within eps = 0.1 on some examples at 1000 queries, at least as often as at
    100 (the first 100 queries of a 1000-query run are the 100-query run), re-checked on the judge."""
    judge, data, x, y = judge_and_data
    attack = RayS(eps=0.1)
    rates = {}
    for budget in (100, 1000):
        result, _, _ = run(attack, judge, data, budget, x, y)
        rates[budget] = success(attack, judge, result, x, y)
        seen = result.queries_to_success > 0
        assert np.all(predict_labels(judge, result.x_adv[seen]) != y[seen])
    assert rates[1000] > 0.0
    assert rates[1000] >= rates[100], rates
