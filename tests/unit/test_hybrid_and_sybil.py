"""Hybrid and Sybil attackers: more ways to spend queries, never more queries than allowed."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from attacks.client import AttackerClient
from attacks.hybrid import Hybrid
from attacks.square import Square
from attacks.transfer_pgd import TransferPGD
from experiments.config import compose_config
from targets.datasets import load_dataset
from targets.oracle import AccessPolicy, Oracle
from targets.training import ModelSpec, get_or_train, predict_labels

SQUARE = {"_target_": "attacks.square.Square", "max_iter": 1000, "p_init": 0.8}
HSJ = {"_target_": "attacks.hopskipjump.HopSkipJump", "init_eval": 10, "max_eval": 40}


@pytest.fixture(scope="module")
def setting():
    cfg = compose_config([])
    data = load_dataset(cfg.data)
    judge = get_or_train(
        ModelSpec.from_config("judge", cfg.target, 0, data.judge, data.input_shape, data.n_classes),
        data.judge, cfg.cache_dir,
    ).model
    surrogate = get_or_train(
        ModelSpec.from_config("surrogate", cfg.surrogate, 1, data.attacker, data.input_shape, data.n_classes),
        data.attacker, cfg.cache_dir,
    ).model
    x, y = data.eval.x[:60], data.eval.y[:60]
    right = predict_labels(judge, x) == y
    return data, judge, surrogate, x[right][:24], y[right][:24]


def client_for(judge, data, output, budget, **limits):
    oracle = Oracle(judge, AccessPolicy("hidden", output, budget, **limits),
                    input_shape=data.input_shape, n_classes=data.n_classes)
    return AttackerClient(oracle)


class RowCounter:
    def __init__(self, model) -> None:
        self.rows = 0
        self.handle = model.register_forward_hook(lambda m, i, o: setattr(self, "rows", self.rows + i[0].shape[0]))


@pytest.mark.parametrize("query, output", [(SQUARE, "probabilities"), (HSJ, "label")])
@pytest.mark.parametrize("budget", [1, 10, 60])
def test_hybrid_never_exceeds_the_budget_across_both_stages(setting, query, output, budget):
    data, judge, surrogate, x, y = setting
    client = client_for(judge, data, output, budget)
    counter = RowCounter(judge)
    try:
        result = Hybrid(eps=0.1, query=query, max_iter=10).run(client, x, y, surrogate=surrogate)
    finally:
        counter.handle.remove()
    assert counter.rows == client.oracle.queries_total == int(result.queries.sum())
    assert result.queries.max() <= budget
    seen = result.queries_to_success > 0
    assert np.all(result.queries_to_success[seen] <= result.queries[seen])


@pytest.mark.parametrize("query, output", [(SQUARE, "probabilities"), (HSJ, "label")])
def test_hybrid_keeps_every_success_plain_transfer_has(setting, query, output):
    """Its first transfer candidate is plain transfer's; the query stage only adds."""
    data, judge, surrogate, x, y = setting
    transfer = TransferPGD(eps=0.1, max_iter=10).run(client_for(judge, data, output, 40), x, y, surrogate=surrogate)
    hybrid = Hybrid(eps=0.1, query=query, max_iter=10).run(client_for(judge, data, output, 40), x, y,
                                                          surrogate=surrogate)
    transferred = transfer.queries_to_success == 1
    assert np.all(hybrid.queries_to_success[transferred] == 1)
    assert (hybrid.queries_to_success > 0).sum() >= transferred.sum()


def test_hybrid_refuses_a_query_stage_that_cannot_start_from_a_transfer_example():
    with pytest.raises(ValueError, match="attack.query"):
        Hybrid(eps=0.1, query={"_target_": "attacks.pgd.PGD"})


def test_sybil_attacker_rotates_accounts_and_stops_when_all_are_spent(setting):
    data, judge, _, x, y = setting
    client = client_for(judge, data, "probabilities", 50, account_limit=40, accounts=3)
    counter = RowCounter(judge)
    try:
        result = Square(eps=0.1).run(client, x, y)
    finally:
        counter.handle.remove()
    assert counter.rows == client.oracle.queries_total == int(result.queries.sum()) <= 3 * 40
    assert result.queries.max() <= 50
    assert client.oracle.accounts_used <= 3
    if client.out_of_accounts:  # every example after the last account ran out was given up, unqueried
        last = int(np.flatnonzero(result.queries)[-1])
        assert np.all(result.queries[last + 1 :] == 0) and np.all(result.budget_exhausted[last + 1 :])


def test_more_accounts_only_add_successes(setting):
    """Seeded per example, the attacker asks the same questions until its accounts run out."""
    data, judge, _, x, y = setting
    outcomes = []
    for accounts in (1, 2, 4):
        client = client_for(judge, data, "probabilities", 100, account_limit=60, accounts=accounts)
        outcomes.append(Square(eps=0.1).run(client, x, y).queries_to_success > 0)
    assert np.all(outcomes[0] <= outcomes[1]) and np.all(outcomes[1] <= outcomes[2])
    assert outcomes[2].sum() > outcomes[0].sum()


def test_rate_limit_turns_queries_into_time_and_accounts_into_cost(setting):
    from conftest import tiny_config

    from experiments import runner

    cfg = tiny_config("square", "access.rate=2", "access.account_limit=20", "access.accounts=5",
                      "access.account_cost=3.5", "n_examples=12")
    m = runner.run(copy.deepcopy(cfg))
    assert m["campaign_hours"] == pytest.approx(m["queries_total"] / 2 / 60)
    assert m["accounts_used"] <= 5 and m["campaign_cost"] == pytest.approx(3.5 * m["accounts_used"])
    if m["attack_success_rate"] > 0:
        assert m["time_to_compromise_hours_median"] > 0 and m["cost_to_compromise_median"] >= 3.5
