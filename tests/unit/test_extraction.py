"""Model extraction: every labelling query is an Oracle query, within the attack's budget and accounts."""
from __future__ import annotations

import pytest
from accounting import RowCounter, make_client
from omegaconf import OmegaConf

from attacks.extraction import extract, label_allowance, query_set
from experiments.config import compose_config
from targets.oracle import SHARED
from targets.training import predict_labels


@pytest.fixture(scope="module")
def setting(digits):
    return digits.data, digits.judge


def surrogate_node(method: str, label_budget: int, **extraction):
    node = compose_config(["surrogate=cnn", "surrogate.knowledge=extracted"]).surrogate
    return OmegaConf.merge(node, {"train": {"epochs": 20, "batch_size": 16}, "extraction": {"method": method,
                                                                     "label_budget": label_budget, **extraction}})


@pytest.mark.parametrize("method, extra", [("copycat", {}), ("knockoff", {}), ("jacobian", {"seed_size": 20})])
def test_every_label_is_an_oracle_query_counted_exactly(setting, method, extra):
    data, judge = setting
    client = make_client(judge, data)
    client.plan(10)
    with RowCounter(judge) as counter:
        surrogate, bought = extract(client, surrogate_node(method, 120, **extra), data.attacker, seed=1, device="cpu")
    assert bought == client.queries(SHARED) == counter.rows == client.oracle.queries_total
    assert bought == 120
    agreement = (predict_labels(surrogate, data.eval.x) == predict_labels(judge, data.eval.x)).mean()
    assert agreement > 0.3  # well above the 0.1 of guessing among ten verdicts


def test_labels_come_out_of_the_same_budget_as_the_attack(setting):
    data, judge = setting
    client = make_client(judge, data, budget=3)
    client.plan(10)  # 30 queries in all, 10 kept for the attack
    assert label_allowance(client, 1000, reserve=10) == 20
    _, bought = extract(client, surrogate_node("copycat", 1000), data.attacker, seed=1, device="cpu")
    assert bought == 20 == client.oracle.queries_total
    client.query(data.eval.x[:1], example=0)  # each example still has its one query for the submission


def test_labels_stay_within_the_accounts_quota(setting):
    data, judge = setting
    client = make_client(judge, data, account_limit=25, accounts=2)
    client.plan(10)
    _, bought = extract(client, surrogate_node("copycat", 1000), data.attacker, seed=1, device="cpu")
    assert bought == 2 * 25 - 10
    assert client.oracle.accounts_used == 2


def test_nothing_left_to_buy_labels_with_is_an_error(setting):
    data, judge = setting
    client = make_client(judge, data, budget=1)
    client.plan(10)
    with pytest.raises(RuntimeError, match="nothing left to buy labels"):
        extract(client, surrogate_node("copycat", 100), data.attacker, seed=1, device="cpu")


def test_query_set_grows_past_the_pool_with_new_inputs(setting):
    data, _ = setting
    x = query_set(data.attacker.x, 3 * len(data.attacker), seed=0)
    assert len(x) == 3 * len(data.attacker) and len({row.tobytes() for row in x}) == len(x)
