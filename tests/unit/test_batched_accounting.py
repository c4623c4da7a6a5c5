"""Batched queries: one call holds rows of many examples, and each example is still charged exactly.

The judge (tests/helpers/tagging.py) writes down which example every row it evaluates belongs to, so the
Oracle's counts are checked against an independent count of what was evaluated.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from gavel.targets.access import SHARED, AttackerClient
from tests.helpers.tagging import oracle, rows_for


def test_a_batch_charges_each_row_to_its_example_and_refuses_rows_past_a_budget():
    judge, api = oracle(budget=3)
    rng = np.random.default_rng(0)
    keys = [0, 1, 0, 2, 0, 0, 1]
    reply = api.query_rows(rows_for(keys, rng), keys)
    assert reply.answered.tolist() == [True, True, True, True, True, False, True]  # example 0's fourth row
    assert reply.over_budget.tolist() == [False] * 5 + [True, False]
    assert not reply.refused_by_account.any()
    assert Counter(judge.seen) == {0: 3, 1: 2, 2: 1}
    assert [api.queries(k) for k in range(3)] == [3, 2, 1] and api.exhausted(0) and not api.exhausted(1)
    assert (reply.values[~reply.answered] == 0).all()


def test_the_account_quota_takes_rows_in_order_and_the_client_moves_on_to_its_next_account():
    judge, api = oracle(account_limit=4, accounts=2)
    client = AttackerClient(api)
    rng = np.random.default_rng(1)
    keys = [0, 1, 2, 3, 0, 1]
    reply = api.query_rows(rows_for(keys, rng), keys, account=0)
    assert reply.answered.tolist() == [True] * 4 + [False] * 2 and reply.refused_by_account.tolist()[4:] == [True] * 2
    keys = [2, 3, 0, 1, 2, 3]
    answers = client.query_rows(rows_for(keys, rng), keys)  # account 0 is spent: account 1 answers 4, then none left
    assert answers.answered.tolist() == [True] * 4 + [False] * 2
    assert client.out_of_accounts and client.stopped(2) and client.stopped(3) and not client.stopped(0)
    assert len(judge.seen) == api.queries_total == 8


def test_only_planned_examples_and_finite_inputs_are_answered():
    judge, api = oracle(planned=2, budget=5)
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="example key 7 was not planned"):
        api.query_rows(rows_for([0, 7], rng), [0, 7])
    with pytest.raises(ValueError, match="not planned"):
        api.query(rows_for([0], rng), example="made-up")
    bad = rows_for([0, 1], rng)
    bad[1, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        api.query_rows(bad, [0, 1])
    bad[1, 0, 2, 2] = np.inf
    with pytest.raises(ValueError, match="finite"):
        api.query_rows(bad, [0, 1])
    with pytest.raises(ValueError, match="shared queries travel alone"):
        api.query_rows(rows_for([0, 1], rng), [0, SHARED])
    assert judge.seen == [] and api.queries_total == 0 and not api.ledger


@pytest.mark.parametrize("trial", range(40))
def test_random_batched_traffic_is_charged_exactly_as_the_judge_saw_it(trial):
    """Random batches of mixed examples under random budgets, quotas and account counts, through the client's
    account rotation: the Oracle's per-example counts equal what the judge evaluated, no limit is broken, and
    a row is refused only once its limit is reached."""
    rng = np.random.default_rng(trial)
    budget = None if rng.random() < 0.3 else int(rng.integers(1, 20))
    limit = None if rng.random() < 0.3 else int(rng.integers(1, 30))
    accounts = int(rng.integers(1, 4))
    output = str(rng.choice(["logits", "probabilities", "label"]))
    planned = int(rng.integers(1, 8))
    judge, api = oracle(planned, budget=budget, account_limit=limit, accounts=accounts, output=output)
    client = AttackerClient(api)
    answered: Counter = Counter()
    for _ in range(int(rng.integers(1, 15))):
        keys = rng.integers(0, planned, size=int(rng.integers(0, 25))).tolist()
        reply = client.query_rows(rows_for(keys, rng), keys)
        answered.update(k for k, ok in zip(keys, reply.answered) if ok)
        for k, ok, over in zip(keys, reply.answered, reply.over_budget):
            if over:  # refused only once spent (or once rows before it found no account left to ask them)
                assert budget is not None and (api.queries(k) == budget or client.out_of_accounts)
            if not ok and not over:
                assert client.out_of_accounts  # refused by quotas only once every account is spent
    seen = Counter(judge.seen)
    for key in range(planned):
        assert api.queries(key) == seen[key] == answered[key]
        assert budget is None or api.queries(key) <= budget
    assert api.queries_total == len(judge.seen) == sum(entry.evaluated for entry in api.ledger)
    per_account = Counter()
    for entry in api.ledger:
        per_account[entry.account] += entry.evaluated
    assert limit is None or max(per_account.values(), default=0) <= limit
    assert set(per_account) <= set(range(accounts))
