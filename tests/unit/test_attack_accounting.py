"""Every attack that queries the judge does so through the Oracle, within budget, and is counted exactly."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from art.attacks.evasion import FastGradientMethod
from art.exceptions import EstimatorError
from helpers.accounting import RowCounter, attackable, make_client, make_oracle, replay_budget

from gavel.attacks.adapters.art import OracleClassifier, QuerySession
from gavel.attacks.base import AttackerKit, Goal
from gavel.attacks.query.hopskipjump import HopSkipJump
from gavel.attacks.query.square import Square
from gavel.attacks.transfer.transfer_pgd import TransferPGD
from gavel.attacks.white_box.pgd import PGD
from gavel.targets.access import AccessDenied, AttackerClient

QUERY_ATTACKS = {
    "square": (lambda: Square(eps=0.1, max_iter=200, backend="art"), "probabilities"),
    "square_logits_no_reuse": (lambda: Square(eps=0.1, max_iter=60, reuse_answers=False, backend="art"), "logits"),
    "square_gavel": (lambda: Square(eps=0.1, max_iter=200, backend="gavel"), "probabilities"),
    "square_gavel_logits": (lambda: Square(eps=0.1, max_iter=60, backend="gavel"), "logits"),
    "hopskipjump": (lambda: HopSkipJump(eps=0.1, init_eval=10, max_eval=40), "label"),
    "hopskipjump_no_reuse": (lambda: HopSkipJump(eps=0.1, init_eval=10, max_eval=40, reuse_answers=False), "label"),
}


@pytest.fixture(scope="module")
def judge_and_data(digits):
    return digits.judge, digits.data, *attackable(digits.judge, digits.data, 40, 10)


@pytest.mark.parametrize("name", sorted(QUERY_ATTACKS))
@pytest.mark.parametrize("budget", [1, 7, 50])
def test_query_attacks_never_exceed_the_budget_and_counts_are_exact(judge_and_data, name, budget):
    judge, data, x, y = judge_and_data
    make, output = QUERY_ATTACKS[name]
    oracle = make_oracle(judge, data, output=output, budget=budget)
    with RowCounter(judge) as counter:
        result = make().run(x, y, AttackerKit(client=AttackerClient(oracle)))
    assert counter.rows == oracle.queries_total == int(result.queries.sum())
    assert result.queries.max() <= budget
    assert [oracle.queries(i) for i in range(len(x))] == result.queries.tolist()
    # an example is marked exhausted only if a query was refused, which only happens once the budget is spent
    assert np.all(result.queries[result.budget_exhausted] == budget)
    seen = result.queries_to_success > 0
    assert np.all(result.queries_to_success[seen] <= result.queries[seen])
    assert np.abs(result.x_adv - x).max() <= 0.1 + 1e-6


REPLAYED = {
    # ART's Square plans its square-size schedule for min(max_iter, budget): the small budget is its max_iter, so
    # both runs plan the same schedule
    "square": (lambda: Square(eps=0.2, max_iter=50, backend="art"), "probabilities", 50),
    # ART's HopSkipJump plans nothing for its budget: the small budget is the median query of the large run's
    # successes, so some example is fooled within it on whatever weights this machine trains
    "hopskipjump": (lambda: HopSkipJump(eps=0.3, init_eval=10, max_eval=40), "label", None),
}
LARGE_BUDGET = 300


@pytest.mark.parametrize("name", sorted(REPLAYED))
def test_a_larger_budget_replays_the_smaller_one(judge_and_data, name):
    """Seeded per example, the library attacker asks the same questions whatever its budget: success seen
    within the small budget is seen at the same query with the large one. (gavel's attacks plan their
    schedule for the budget they have, so they ask other questions under another budget: see
    `test_gavel_attacks_spend_every_budget_they_do_not_win_with`.)"""
    judge, data, x, y = judge_and_data
    make, output, small_budget = REPLAYED[name]
    large = make().run(x, y, AttackerKit(client=make_client(judge, data, output=output, budget=LARGE_BUDGET)))
    small_budget = small_budget or replay_budget(large, name, LARGE_BUDGET)
    small = make().run(x, y, AttackerKit(client=make_client(judge, data, output=output, budget=small_budget)))
    seen_small = small.queries_to_success > 0
    assert seen_small.any(), f"{name} fooled none within {small_budget} queries: nothing to replay"
    np.testing.assert_array_equal(small.queries_to_success[seen_small], large.queries_to_success[seen_small])
    # and every success the large run saw within the small budget, the small run saw too
    early = (large.queries_to_success > 0) & (large.queries_to_success <= small_budget)
    assert np.all(seen_small[early])


def test_unlimited_budget_runs_to_the_attacks_own_limit(judge_and_data):
    judge, data, x, y = judge_and_data
    oracle = make_oracle(judge, data, output="probabilities")
    with RowCounter(judge) as counter:
        result = Square(eps=0.1, max_iter=30, backend="art").run(x, y, AttackerKit(client=AttackerClient(oracle)))
    assert counter.rows == oracle.queries_total == int(result.queries.sum())
    assert not result.budget_exhausted.any()


def test_gavel_attacks_without_a_budget_stop_at_their_own_cap(judge_and_data):
    """No budget: each example runs to `max_queries`, the attacker's own cap, which is no refusal."""
    judge, data, x, y = judge_and_data
    oracle = make_oracle(judge, data, output="probabilities")
    with RowCounter(judge) as counter:
        result = Square(eps=0.1, max_iter=30, max_queries=45).run(x, y, AttackerKit(client=AttackerClient(oracle)))
    assert counter.rows == oracle.queries_total == int(result.queries.sum())
    unfooled = result.queries_to_success < 0
    assert unfooled.any() and (result.queries[unfooled] == 45).all()
    assert not result.budget_exhausted.any()


@pytest.mark.parametrize("output", ["logits", "probabilities", "label"])
def test_transfer_submits_each_example_once(judge_and_data, output):
    judge, data, x, y = judge_and_data
    oracle = make_oracle(judge, data, output=output, budget=1)
    with RowCounter(judge) as counter:
        kit = AttackerKit(client=AttackerClient(oracle), surrogate=copy.deepcopy(judge))
        result = TransferPGD(eps=0.1, max_iter=5).run(x, y, kit)
    assert counter.rows == oracle.queries_total == len(x)
    assert result.queries.tolist() == [1] * len(x)


def test_white_box_sends_no_queries_and_needs_open_weights(judge_and_data):
    judge, data, x, y = judge_and_data
    open_client = make_client(judge, data, output="logits", weights="open")
    result = PGD(eps=0.1, max_iter=5).run(x, y, AttackerKit(client=open_client))
    assert result.queries.sum() == 0
    with pytest.raises(AccessDenied, match="access.weights=hidden"):
        PGD(eps=0.1, max_iter=5).run(x, y, AttackerKit(client=make_client(judge, data, output="logits")))


def test_art_gradient_attacks_cannot_reach_a_hidden_judge_through_the_oracle(judge_and_data):
    judge, data, x, y = judge_and_data
    oracle = make_oracle(judge, data, output="probabilities")
    session = QuerySession(AttackerClient(oracle), 0, x[0], int(y[0]), Goal(0.1), reuse_answers=True)
    estimator = OracleClassifier(session)
    with pytest.raises(AccessDenied):
        estimator.loss_gradient(x[:1], np.eye(10)[y[:1]])
    with pytest.raises(AccessDenied):
        estimator.class_gradient(x[:1], label=int(y[0]))
    with pytest.raises((AccessDenied, EstimatorError)):  # ART refuses a black-box estimator up front
        FastGradientMethod(estimator, eps=0.1).generate(x[:1], y=np.eye(10)[y[:1]])
    assert oracle.queries_total == 0


@pytest.mark.parametrize("name", ["square_gavel", "square_gavel_logits"])
@pytest.mark.parametrize("budget", [1, 7, 50])
def test_gavel_attacks_spend_every_budget_they_do_not_win_with(judge_and_data, name, budget):
    """The budget binds: an example that was not fooled was given up only once its budget was spent."""
    judge, data, x, y = judge_and_data
    make, output = QUERY_ATTACKS[name]
    result = make().run(x, y, AttackerKit(client=make_client(judge, data, output=output, budget=budget)))
    unfooled = result.queries_to_success < 0
    assert unfooled.any()
    assert (result.queries[unfooled] == budget).all() and result.budget_exhausted[unfooled].all()
    assert (result.queries[~unfooled] <= budget).all()
