"""Model extraction: every labelling query is an Oracle query, within the attack's budget and accounts."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from attacks.client import AttackerClient
from attacks.extraction import extract, label_allowance, query_set
from experiments.config import compose_config
from targets.datasets import load_dataset
from targets.oracle import SHARED, AccessPolicy, Oracle
from targets.training import ModelSpec, get_or_train, predict_labels


@pytest.fixture(scope="module")
def setting():
    cfg = compose_config([])
    data = load_dataset(cfg.data)
    spec = ModelSpec.from_config("judge", cfg.target, 0, data.judge, data.input_shape, data.n_classes)
    return data, get_or_train(spec, data.judge, cfg.cache_dir).model


def surrogate_node(method: str, label_budget: int, **extraction):
    node = compose_config(["surrogate=cnn", "surrogate.knowledge=extracted"]).surrogate
    return OmegaConf.merge(node, {"train": {"epochs": 20, "batch_size": 16}, "extraction": {"method": method,
                                                                     "label_budget": label_budget, **extraction}})


def client_for(judge, data, budget=None, planned=10, **limits):
    policy = AccessPolicy("hidden", "label", budget, **limits)
    client = AttackerClient(Oracle(judge, policy, input_shape=data.input_shape, n_classes=data.n_classes))
    client.plan(planned)
    return client


class RowCounter:
    def __init__(self, model) -> None:
        self.rows = 0
        self.handle = model.register_forward_hook(lambda m, i, o: setattr(self, "rows", self.rows + i[0].shape[0]))


@pytest.mark.parametrize("method, extra", [("copycat", {}), ("knockoff", {}), ("jacobian", {"seed_size": 20})])
def test_every_label_is_an_oracle_query_counted_exactly(setting, method, extra):
    data, judge = setting
    client = client_for(judge, data)
    counter = RowCounter(judge)
    try:
        surrogate, bought = extract(client, surrogate_node(method, 120, **extra), data.attacker, seed=1, device="cpu")
    finally:
        counter.handle.remove()
    assert bought == client.queries(SHARED) == counter.rows == client.oracle.queries_total
    assert bought == 120
    agreement = (predict_labels(surrogate, data.eval.x) == predict_labels(judge, data.eval.x)).mean()
    assert agreement > 0.3  # well above the 0.1 of guessing among ten verdicts


def test_labels_come_out_of_the_same_budget_as_the_attack(setting):
    data, judge = setting
    client = client_for(judge, data, budget=3, planned=10)  # 30 queries in all, 10 kept for the attack
    assert label_allowance(client, 1000, reserve=10) == 20
    _, bought = extract(client, surrogate_node("copycat", 1000), data.attacker, seed=1, device="cpu")
    assert bought == 20 == client.oracle.queries_total
    client.query(data.eval.x[:1], example=0)  # each example still has its one query for the submission


def test_labels_stay_within_the_accounts_quota(setting):
    data, judge = setting
    client = client_for(judge, data, account_limit=25, accounts=2, planned=10)
    _, bought = extract(client, surrogate_node("copycat", 1000), data.attacker, seed=1, device="cpu")
    assert bought == 2 * 25 - 10
    assert client.oracle.accounts_used == 2


def test_nothing_left_to_buy_labels_with_is_an_error(setting):
    data, judge = setting
    client = client_for(judge, data, budget=1, planned=10)
    with pytest.raises(RuntimeError, match="nothing left to buy labels"):
        extract(client, surrogate_node("copycat", 100), data.attacker, seed=1, device="cpu")


def test_query_set_grows_past_the_pool_with_new_inputs(setting):
    data, _ = setting
    x = query_set(data.attacker.x, 3 * len(data.attacker), seed=0)
    assert len(x) == 3 * len(data.attacker) and len({row.tobytes() for row in x}) == len(x)
