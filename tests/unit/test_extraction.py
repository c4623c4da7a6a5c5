"""Model extraction: every labelling query is an Oracle query, within the attack's budget and accounts."""

from __future__ import annotations

from dataclasses import replace

import pytest
from helpers.accounting import RowCounter, make_oracle

from gavel.attacks.extraction import ExtractionSpec, extract
from gavel.attacks.extraction.base import query_set
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.targets.access import SHARED, AttackerClient
from gavel.targets.training import ModelConfig, predict_labels


@pytest.fixture(scope="module")
def setting(digits):
    return digits.data, digits.judge


def surrogate_model() -> ModelConfig:
    """`surrogate=cnn` as configured, trained for 20 epochs in batches of 16."""
    settings = RunSettings.from_config(
        compose_config(["attack=transfer_pgd", "access=hidden_label", "surrogate=cnn", "surrogate.knowledge=extracted"])
    )
    (model,) = settings.surrogate_instance.members
    return replace(model, train=replace(model.train, epochs=20, batch_size=16))


def steal(client, method: str, label_budget: int, pool, **extraction):
    spec = ExtractionSpec(method=method, label_budget=label_budget, **extraction)
    return extract(client, surrogate_model(), spec, pool, seed=1, device="cpu")


@pytest.mark.parametrize("method, extra", [("copycat", {}), ("knockoff", {}), ("jacobian", {"seed_size": 20})])
def test_every_label_is_an_oracle_query_counted_exactly(setting, method, extra):
    data, judge = setting
    oracle = make_oracle(judge, data, planned=None)
    client = AttackerClient(oracle)
    client.plan(10)
    with RowCounter(judge) as counter:
        surrogate, bought = steal(client, method, 120, data.attacker, **extra)
    assert bought == client.queries(SHARED) == counter.rows == oracle.queries_total == client.queries_total
    assert bought == 120
    agreement = (predict_labels(surrogate, data.eval.x) == predict_labels(judge, data.eval.x)).mean()
    assert agreement > 0.3  # well above the 0.1 of guessing among ten verdicts


def test_labels_come_out_of_the_same_budget_as_the_attack(setting):
    data, judge = setting
    oracle = make_oracle(judge, data, budget=3, planned=None)
    client = AttackerClient(oracle)
    client.plan(10)  # 30 queries in all, 10 kept for the attack
    assert client.label_allowance(1000, reserve=10) == 20
    _, bought = steal(client, "copycat", 1000, data.attacker)
    assert bought == 20 == oracle.queries_total
    client.query(data.eval.x[:1], example=0)  # each example still has its one query for the submission


def test_labels_stay_within_the_accounts_quota(setting):
    data, judge = setting
    oracle = make_oracle(judge, data, account_limit=25, accounts=2, planned=None)
    client = AttackerClient(oracle)
    client.plan(10)
    _, bought = steal(client, "copycat", 1000, data.attacker)
    assert bought == 2 * 25 - 10
    assert oracle.accounts_used == 2


def test_nothing_left_to_buy_labels_with_is_an_error(setting):
    data, judge = setting
    client = AttackerClient(make_oracle(judge, data, budget=1, planned=None))
    client.plan(10)
    with pytest.raises(RuntimeError, match="nothing left to buy labels"):
        steal(client, "copycat", 100, data.attacker)


def test_query_set_grows_past_the_pool_with_new_inputs(setting):
    data, _ = setting
    x = query_set(data.attacker.x, 3 * len(data.attacker), seed=0)
    assert len(x) == 3 * len(data.attacker) and len({row.tobytes() for row in x}) == len(x)
