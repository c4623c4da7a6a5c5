"""Randomised answers and the attacker that averages them: the input-noise defense (RND) is a fresh draw on
every forward and reproducible from its seed; an EOT attacker (`eot_samples` = M) pays for every one of its M
answers per point, never goes over its budget, and stops when it cannot pay for one more point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.accounting import RowCounter, attackable

from gavel.attacks.base import AttackerKit
from gavel.attacks.query.hopskipjump import HopSkipJump
from gavel.attacks.query.square import Square
from gavel.defenses.base import OperatorKit
from gavel.defenses.randomised.input_noise import InputNoise
from gavel.targets.access import AccessPolicy, AttackerClient, Oracle


@pytest.fixture(scope="module")
def judge_and_data(digits):
    return digits.judge, digits.data, *attackable(digits.judge, digits.data, 60, 16)


def operator(data, seed: int = 0) -> OperatorKit:
    return OperatorKit(data.judge.x, data.judge.y, data.n_classes, seed)


def test_input_noise_is_fresh_on_every_forward_and_reproducible_from_its_seed(judge_and_data):
    judge, data, x, _ = judge_and_data
    batch = torch.from_numpy(x[:8])

    def two_draws(seed):
        model = InputNoise(sigma=0.2).deploy(judge, operator(data, seed)).model
        with torch.no_grad():
            return model(batch), model(batch)

    first, second = two_draws(0)
    assert not torch.equal(first, second)  # a fresh draw each time
    again, _ = two_draws(0)
    assert torch.equal(first, again)  # the same seed, the same run
    other, _ = two_draws(1)
    assert not torch.equal(first, other)
    with torch.no_grad():
        assert not torch.equal(first, judge(batch))


@pytest.mark.parametrize("sigma", [0, -0.1, 1.5, True])
def test_input_noise_refuses_a_sigma_out_of_range(sigma):
    with pytest.raises(ValueError, match=r"defense\.sigma=.*allowed: a number in \(0, 1\]"):
        InputNoise(sigma=sigma)


@pytest.mark.parametrize("budget,samples", [(40, 4), (42, 4), (30, 1), (9, 10)])
def test_an_eot_attacker_pays_for_every_sample_and_stops_when_it_cannot_pay_for_a_point(
    judge_and_data, budget, samples
):
    judge, data, x, y = judge_and_data
    shield = InputNoise(sigma=0.05).deploy(judge, operator(data))
    policy = AccessPolicy("hidden", "probabilities", budget)
    oracle = Oracle(judge, policy, input_shape=data.input_shape, n_classes=data.n_classes, shield=shield)
    client = AttackerClient(oracle)
    client.plan(len(x))
    attack = Square(eps=0.05, eot_samples=samples)
    with RowCounter(shield.model) as counter:
        result = attack.run(x, y, AttackerKit(client=client))
    spendable = budget - budget % samples  # what whole points cost
    queries = np.array([oracle.queries(i) for i in range(len(x))])
    assert counter.rows == oracle.rows_evaluated == queries.sum() == result.queries.sum()
    assert (queries % samples == 0).all() and (queries <= spendable).all()
    unfooled = result.queries_to_success < 0
    assert (queries[unfooled] == spendable).all()  # the budget binds, in whole points
    assert result.budget_exhausted[unfooled].all()
    assert (result.queries_to_success[~unfooled] % samples == 0).all()


def test_averaged_answers_vary_less_than_single_answers(judge_and_data):
    """What EOT buys, on the Oracle's own answers: two means of 10 noisy answers differ far less (in squared
    difference) than two single answers do: the attacker reads the judge's expected answer, not one draw."""
    judge, data, x, _ = judge_and_data
    shield = InputNoise(sigma=0.3).deploy(judge, operator(data))
    policy = AccessPolicy("hidden", "probabilities", None)
    oracle = Oracle(judge, policy, input_shape=data.input_shape, n_classes=data.n_classes, shield=shield)
    oracle.plan(1)

    def answer():
        return oracle.query_rows(x, [0] * len(x)).values

    single = np.square(answer() - answer()).mean()
    averaged = np.square(
        np.mean([answer() for _ in range(10)], axis=0) - np.mean([answer() for _ in range(10)], axis=0)
    )
    assert averaged.mean() < single / 3  # a tenth of the variance, in expectation
    assert oracle.queries_total == 22 * len(x)


def test_eot_needs_gavels_backend():
    with pytest.raises(ValueError, match="attack.eot_samples=4: a library backend asks once per point"):
        Square(eps=0.1, backend="art", eot_samples=4)
    assert HopSkipJump(eps=0.1, eot_samples=3).eot_samples == 3


def test_blinding_makes_every_row_sent_distinct_eot_repeats_included(judge_and_data):
    judge, data, x, y = judge_and_data
    policy = AccessPolicy("hidden", "probabilities", 12)
    oracle = Oracle(judge, policy, input_shape=data.input_shape, n_classes=data.n_classes)
    client = AttackerClient(oracle)
    client.plan(4)
    attack = Square(eps=0.1, eot_samples=3, blinding=0.05)
    with RowCounter(judge) as counter:
        result = attack.run(x[:4], y[:4], AttackerKit(client=client))
    rows = np.stack(counter.inputs).reshape(len(counter.inputs), -1)
    assert len(np.unique(rows, axis=0)) == len(rows) == oracle.rows_evaluated == result.queries.sum()
    assert (
        np.abs(rows.reshape(-1, *x.shape[1:])[:, None] - x[:4][None]).max(axis=(2, 3, 4)).min(axis=1) <= 0.1 + 1e-6
    ).all()
