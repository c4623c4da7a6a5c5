"""The access package's contracts: each threat model's needs checked against every access policy, one allowance
rule read by the Oracle and the attacker alike, and a client that never hands out the Oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gavel.targets.access import (
    DECISION_BASED,
    HYBRID,
    POISONING,
    SCORE_BASED,
    SHARED,
    THREAT_MODELS,
    TRANSFER,
    WHITE_BOX,
    AccessDenied,
    AccessPolicy,
    AttackerClient,
    BudgetExhausted,
    Oracle,
    Output,
    Weights,
    threat_model_named,
)

WEIGHTS = ("open", "hidden")
OUTPUTS = ("logits", "probabilities", "label")

# What each threat model needs of the access policy, as docs/threat-models.md states it. A hybrid attacker's needs
# are its query stage's (`Hybrid.check_access`), so the hybrid threat model itself asks for nothing.
ALLOWED = {
    WHITE_BOX: lambda weights, output: weights == "open",
    TRANSFER: lambda weights, output: True,
    SCORE_BASED: lambda weights, output: output != "label",
    DECISION_BASED: lambda weights, output: True,
    HYBRID: lambda weights, output: True,
    POISONING: lambda weights, output: True,
}


def judge() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


def oracle_for(policy: AccessPolicy) -> Oracle:
    """Unplanned: each test plans its examples through the client."""
    return Oracle(judge(), policy, input_shape=(1, 2, 2), n_classes=3)


def inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 2, 2), dtype=np.float32)


def test_the_threat_models_are_six_objects_named_as_in_the_yaml():
    assert [m.name for m in THREAT_MODELS] == [
        "white_box", "transfer", "score_based", "decision_based", "hybrid", "poisoning"
    ]  # fmt: skip
    assert set(ALLOWED) == set(THREAT_MODELS)
    for model in THREAT_MODELS:
        assert threat_model_named(model.name) is model and str(model) == model.name
    with pytest.raises(ValueError, match="threat model 'grey_box': allowed: white_box, transfer"):
        threat_model_named("grey_box")


@pytest.mark.parametrize("threat_model", THREAT_MODELS, ids=lambda m: m.name)
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("output", OUTPUTS)
def test_threat_model_check_against_every_access_option(threat_model, weights, output):
    policy = AccessPolicy(weights, output, None)
    if ALLOWED[threat_model](weights, output):
        threat_model.check(policy)
        return
    with pytest.raises(AccessDenied) as denied:
        threat_model.check(policy)
    message = str(denied.value)
    assert threat_model.name in message and "allowed: " in message
    if weights == "hidden" and threat_model.open_weights:
        assert "access.weights=hidden" in message
    else:
        assert "access.output=label" in message


def test_policy_fields_are_enums_that_equal_their_yaml_strings():
    policy = AccessPolicy.from_mapping({"weights": "hidden", "output": "probabilities", "budget": 5})
    assert policy.weights is Weights.HIDDEN and policy.weights == "hidden"
    assert policy.output is Output.PROBABILITIES and policy.output == "probabilities"
    assert policy == AccessPolicy("hidden", "probabilities", 5)
    with pytest.raises(ValueError, match="access.budgt: no such key; allowed keys: weights, output, budget"):
        AccessPolicy.from_mapping({"weights": "hidden", "output": "label", "budget": 5, "budgt": 3})


def used_so_far(client: AttackerClient, keys) -> dict:
    """What the operator charged each key, as the attacker reads it off its client."""
    return {key: client.queries(key) for key in keys}


def test_allowance_is_one_rule_the_oracle_and_the_attacker_both_read():
    """Under shared queries (model extraction's labels) the Oracle enforces, and the client reports, exactly what
    `AccessPolicy.allowance` says, after every query."""
    policy = AccessPolicy("hidden", "label", 10)
    oracle = oracle_for(policy)
    client = AttackerClient(oracle)
    keys = [SHARED, 0, 1, 2, 3]
    planned = 4  # four examples: 40 queries in all

    def agree():
        used = used_so_far(client, keys)
        for key in keys:
            rule = policy.allowance(key, used, planned)
            assert oracle.allowance(key) == rule == client.budget_left(key), key

    client.plan(planned)
    agree()
    client.query(inputs(12), example=SHARED)  # each example's share of the 12 is 3
    agree()
    client.query(inputs(5), example=0)
    agree()
    assert client.budget_left(0) == 10 - 3 - 5 and client.budget_left(1) == 10 - 3
    assert client.budget_left(SHARED) == 40 - 12 - 5
    client.query(inputs(1), example=SHARED)  # 13 shared: the share rounds up to 4
    agree()
    assert client.budget_left(0) == 10 - 4 - 5 and client.budget_left(3) == 10 - 4
    with pytest.raises(BudgetExhausted) as refused:  # the Oracle answers exactly the allowance, no more
        client.query(inputs(8, seed=1), example=1)
    assert len(refused.value.answered) == 6
    agree()
    assert client.budget_left(1) == 0 and oracle.exhausted(1)
    assert oracle.queries_total == 12 + 5 + 1 + 6


def test_labels_the_attacker_may_buy_follow_the_same_rule_and_its_quotas():
    policy = AccessPolicy("hidden", "label", 3, account_limit=25, accounts=2)
    client = AttackerClient(oracle_for(policy))
    client.plan(10)  # 30 queries in all under the budget, 50 under the quotas
    assert client.budget_left(SHARED) == 30 and client.quota_left() == 50
    assert client.label_allowance(1000, reserve=10) == 20
    assert client.label_allowance(5, reserve=10) == 5
    client.query(inputs(15), example=SHARED)
    assert client.budget_left(SHARED) == 15 and client.quota_left() == 35
    assert client.label_allowance(1000, reserve=10) == 5
    assert client.label_allowance(1000, reserve=20) == 0


def test_an_unlimited_budget_is_infinite_for_the_oracle_and_none_for_the_attacker():
    policy = AccessPolicy("hidden", "label", None)
    oracle = oracle_for(policy)
    client = AttackerClient(oracle)
    client.plan(1)
    client.query(inputs(7), example=0)
    assert oracle.allowance(0) == math.inf == policy.allowance(0, used_so_far(client, [0]), 1)
    assert client.budget_left(0) is None and client.budget_left(SHARED) is None
    assert client.quota_left() is None and client.label_allowance(50, reserve=10) == 50


def test_the_attacker_client_never_hands_out_the_oracle_or_a_hidden_judge():
    oracle = oracle_for(AccessPolicy("hidden", "probabilities", 5))
    client = AttackerClient(oracle)
    assert not hasattr(client, "oracle")
    for name in dir(client):
        if not name.startswith("_"):
            assert not isinstance(getattr(client, name), (Oracle, nn.Module)), name
    with pytest.raises(AccessDenied, match="access.weights=hidden"):
        client.open_weights()
    # what it may read: the operator's published facts
    client.plan(1)
    client.query(inputs(2), example=0)
    assert client.queries(0) == client.queries_total == oracle.queries_total == 2
    assert client.policy is oracle.policy and client.input_shape == (1, 2, 2) and client.n_classes == 3
