"""gavel's batched score-based attacks (Square L2, SimBA; Square L-inf in the agreement test too): exact
accounting, budgets spent in full, every query within eps, and success at least close to their ART
counterparts' at the same budget."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers.accounting import RowCounter, attackable, make_oracle
from helpers.paired import enough_to_compare, no_less_success

from gavel.attacks.base import AttackerKit
from gavel.attacks.query.simba import SimBA
from gavel.attacks.query.square import Square, SquareL2
from gavel.targets.access import AttackerClient
from gavel.targets.training import predict_labels

# name -> (attack factory, API output)
ATTACKS = {
    "square": (lambda **k: Square(eps=0.1, **k), "probabilities"),
    "square_l2": (lambda **k: SquareL2(eps=1.0, **k), "probabilities"),
    "square_l2_logits": (lambda **k: SquareL2(eps=1.0, **k), "logits"),
    "simba": (lambda **k: SimBA(eps=0.1, **k), "probabilities"),
    "simba_logits": (lambda **k: SimBA(eps=0.1, **k), "logits"),
    "simba_targeted": (lambda **k: SimBA(eps=0.3, targeted=True, target_class=3, **k), "probabilities"),
}


@pytest.fixture(scope="module")
def judge_and_data(digits):
    return digits.judge, digits.data, *attackable(digits.judge, digits.data, 80, 40)


def run(attack, output, judge, data, budget, x, y, starts=None):
    oracle = make_oracle(judge, data, output=output, budget=budget, planned=len(x))
    kit = AttackerKit(client=AttackerClient(oracle), starts=starts)
    with RowCounter(judge) as counter, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ART's L2 Square divides by zero norms on 8x8 images
        result = attack.run(x, y, kit)
    return result, oracle, counter


def fooled(attack, judge, result, x, y) -> np.ndarray:
    """Each example whose submitted input fools the judge within eps, re-checked on the judge."""
    labels = predict_labels(judge, result.x_adv)
    return attack.goal.fooled(labels, y) & attack.goal.within(result.x_adv, x)


def success(attack, judge, result, x, y) -> float:
    """The share of examples whose submitted input fools the judge within eps, re-checked on the judge."""
    return float(fooled(attack, judge, result, x, y).mean())


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("budget", [1, 7, 60])
def test_every_query_is_counted_and_every_budget_spent(judge_and_data, name, budget):
    """Proves: the judge's rows, the Oracle's count and the attack's report agree; no example goes over its
    budget, and every example not fooled spent all of it (restarts and fresh passes keep it asking)."""
    judge, data, x, y = judge_and_data
    factory, output = ATTACKS[name]
    attack = factory()
    x, y = x[:12], y[:12]
    if attack.targeted:
        x, y = x[y != attack.target_class], y[y != attack.target_class]
    result, oracle, counter = run(attack, output, judge, data, budget, x, y)
    assert counter.rows == oracle.queries_total == int(result.queries.sum()) > 0
    assert result.queries.max() <= budget
    assert [oracle.queries(i) for i in range(len(x))] == result.queries.tolist()
    unfooled = result.queries_to_success < 0
    assert np.all(result.queries[unfooled] == budget)
    seen = ~unfooled
    assert np.all(result.queries_to_success[seen] <= result.queries[seen])
    assert result.x_adv.dtype == np.float32 and result.x_adv.min() >= 0.0 and result.x_adv.max() <= 1.0
    assert attack.goal.within(result.x_adv, x).all()
    if seen.any():  # what the attacker saw fooled the judge is the input it submits
        assert attack.goal.fooled(predict_labels(judge, result.x_adv[seen]), y[seen]).all()


@pytest.mark.parametrize("name", ["square_l2", "simba"])
def test_without_a_budget_each_example_stops_at_max_queries(judge_and_data, name):
    """Proves: with an unlimited budget the attack ends at `max_queries` per example, the counts agreeing."""
    judge, data, x, y = judge_and_data
    factory, output = ATTACKS[name]
    result, oracle, counter = run(factory(max_queries=40), output, judge, data, None, x[:6], y[:6])
    assert counter.rows == oracle.queries_total == int(result.queries.sum())
    assert result.queries.max() <= 40
    assert np.all(result.queries[result.queries_to_success < 0] == 40)


@pytest.mark.parametrize("name", ["square_l2", "simba"])
def test_every_query_lies_in_the_ball_even_from_a_start(judge_and_data, name):
    """Proves: every input asked (not only the one submitted) lies in [0, 1] within eps of the original, from
    the attack's own start and from a hybrid attacker's start outside the ball."""
    judge, data, x, y = judge_and_data
    factory, output = ATTACKS[name]
    attack = factory()
    origin, label = x[:1], y[:1]
    far = np.clip(origin + np.random.default_rng(0).standard_normal(origin.shape).astype(np.float32), 0, 1)
    for starts in (None, (far[0],)):
        _, _, counter = run(attack, output, judge, data, 150, origin, label, starts=starts)
        asked = np.stack(counter.inputs)
        assert len(asked) > 1 and asked.min() >= 0.0 and asked.max() <= 1.0
        assert attack.goal.within(asked, np.repeat(origin, len(asked), axis=0)).all()


@pytest.mark.parametrize("name", ["square_l2", "simba"])
def test_same_seed_same_run(judge_and_data, name):
    """Proves: the batched attacks follow the seed: the same questions, in the same order, the same result."""
    judge, data, x, y = judge_and_data
    factory, output = ATTACKS[name]
    first, _, asked_first = run(factory(seed=3), output, judge, data, 40, x[:6], y[:6])
    second, _, asked_second = run(factory(seed=3), output, judge, data, 40, x[:6], y[:6])
    np.testing.assert_array_equal(np.stack(asked_first.inputs), np.stack(asked_second.inputs))
    np.testing.assert_array_equal(first.queries_to_success, second.queries_to_success)
    np.testing.assert_array_equal(first.x_adv, second.x_adv)


def test_square_l2_keeps_its_perturbation_on_the_sphere(judge_and_data):
    """Proves: the L2 update moves mass between windows instead of losing it: every query's perturbation has
    L2 norm eps unless clipping to [0, 1] took some away (never more than eps)."""
    judge, data, x, y = judge_and_data
    attack = SquareL2(eps=0.5)
    origin, label = x[1:2], y[1:2]
    _, _, counter = run(attack, "probabilities", judge, data, 80, origin, label)
    asked = np.stack(counter.inputs)
    norms = np.sqrt(((asked - origin) ** 2).reshape(len(asked), -1).sum(axis=1))
    assert norms.max() <= 0.5 + 1e-5
    assert np.median(norms) > 0.4  # clipping at 0 and 1 takes some, not most


@pytest.mark.parametrize("name, budget", [("simba", 250), ("square_l2", 200), ("square", 200)])
def test_gavel_succeeds_about_as_often_as_art(judge_and_data, name, budget):
    """Proves: at the same budget, gavel's batched attack fools the judge (re-checked on the judge) at least
    about as often as ART's: not significantly less often on the same 40 examples (McNemar, helpers.paired)."""
    judge, data, x, y = judge_and_data
    factory, output = ATTACKS[name]
    found = {}
    for backend in ("gavel", "art"):
        attack = factory(backend=backend)
        result, oracle, counter = run(attack, output, judge, data, budget, x, y)
        assert counter.rows == oracle.queries_total == int(result.queries.sum())
        assert result.queries.max() <= budget
        found[backend] = fooled(attack, judge, result, x, y)
    enough_to_compare(*found.values())
    no_less_success(found["gavel"], found["art"])
