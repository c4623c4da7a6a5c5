"""The Oracle's accounting: counts are exact, budgets are unbreakable, outputs are what the policy allows."""

import numpy as np
import pytest
import torch
from torch import nn

from gavel.targets.access import SHARED, AccessDenied, AccessPolicy, AccountLimitReached, BudgetExhausted, Oracle


class CountingModel(nn.Module):
    """A fixed linear judge over 1x4x4 inputs that counts every row its forward evaluates."""

    def __init__(self, n_classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(16, n_classes)
        self.rows_evaluated = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows_evaluated += x.shape[0]
        return self.linear(x.flatten(1))


PLANNED = 8
"""Examples each test's Oracle plans for (keys 0..7): it answers no other key."""


def make_oracle(output="logits", budget=None, weights="hidden", batch_size=256):
    model = CountingModel()
    policy = AccessPolicy(weights=weights, output=output, budget=budget)
    oracle = Oracle(model, policy, input_shape=(1, 4, 4), n_classes=5, batch_size=batch_size)
    oracle.plan(PLANNED)
    return model, oracle


def inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 4, 4), dtype=np.float32)


@pytest.mark.parametrize("output", ["logits", "probabilities", "label"])
def test_count_equals_rows_the_model_evaluated(output):
    model, oracle = make_oracle(output=output, batch_size=7)
    for example, n in enumerate([1, 3, 7, 8, 20, 0, 256]):
        oracle.query(inputs(n, seed=example), example=example % 3)
    assert oracle.queries_total == model.rows_evaluated == 1 + 3 + 7 + 8 + 20 + 256
    assert sum(oracle.queries(k) for k in range(3)) == model.rows_evaluated
    assert oracle.queries(0) == 1 + 8 + 256  # examples 0, 3, 6 map to account key 0
    assert sum(entry.evaluated for entry in oracle.ledger) == model.rows_evaluated


def test_budget_is_never_exceeded_and_partial_batch_answers_only_rows_within_budget():
    model, oracle = make_oracle(output="label", budget=10)
    oracle.query(inputs(4), example=0)
    oracle.query(inputs(4, seed=1), example=0)
    with pytest.raises(BudgetExhausted) as refused:
        oracle.query(inputs(4, seed=2), example=0)
    assert refused.value.example == 0
    assert refused.value.answered.shape == (2,)  # the two rows still within budget were answered
    assert model.rows_evaluated == 10
    assert oracle.queries(0) == 10 and oracle.exhausted(0)

    with pytest.raises(BudgetExhausted) as refused_again:
        oracle.query(inputs(1), example=0)
    assert refused_again.value.answered.shape == (0,)
    assert model.rows_evaluated == 10

    oracle.query(inputs(10), example=1)  # budgets are per example
    assert model.rows_evaluated == 20 and not oracle.exhausted(1)


def test_budget_holds_under_random_batch_sizes():
    rng = np.random.default_rng(42)
    for trial in range(30):
        budget = int(rng.integers(1, 60))
        model, oracle = make_oracle(output="probabilities", budget=budget, batch_size=int(rng.integers(1, 9)))
        answered = 0
        for step in range(15):
            n = int(rng.integers(0, 12))
            try:
                answered += len(oracle.query(inputs(n, seed=step), example=0))
            except BudgetExhausted as refused:
                answered += len(refused.answered)
        assert model.rows_evaluated == oracle.queries(0) == answered <= budget


def test_answers_partial_rows_match_a_full_evaluation():
    _, full = make_oracle(output="logits")
    _, limited = make_oracle(output="logits", budget=3)
    x = inputs(5)
    with pytest.raises(BudgetExhausted) as refused:
        limited.query(x, example=0)
    np.testing.assert_allclose(refused.value.answered, full.query(x, example=0)[:3], rtol=1e-6)


def test_output_modes_reveal_only_what_the_policy_allows():
    x = inputs(6)
    model = CountingModel()
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    answers = {}
    for output in ("logits", "probabilities", "label"):
        oracle = Oracle(model, AccessPolicy("hidden", output, None), input_shape=(1, 4, 4), n_classes=5)
        oracle.plan(1)
        answers[output] = oracle.query(x, example=0)
    np.testing.assert_allclose(answers["logits"], logits, rtol=1e-6)
    assert answers["logits"].dtype == np.float32
    np.testing.assert_allclose(answers["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(answers["probabilities"], torch.softmax(torch.from_numpy(logits), 1).numpy(), rtol=1e-5)
    assert answers["label"].shape == (6,) and answers["label"].dtype == np.int64
    np.testing.assert_array_equal(answers["label"], logits.argmax(axis=1))


def test_hidden_weights_raise_access_denied():
    _, hidden = make_oracle(weights="hidden")
    with pytest.raises(AccessDenied, match="access.weights=hidden"):
        hidden.open_weights()
    model, open_ = make_oracle(weights="open")
    assert open_.open_weights() is model


def test_rejects_inputs_outside_the_judge_domain_without_counting():
    model, oracle = make_oracle(budget=5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        oracle.query(inputs(2) + 1.5, example=0)
    with pytest.raises(ValueError, match="shape"):
        oracle.query(np.zeros((2, 3, 4, 4), dtype=np.float32), example=0)
    assert model.rows_evaluated == 0 and oracle.queries(0) == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weights": "closed", "output": "label", "budget": None}, "access.weights"),
        ({"weights": "open", "output": "scores", "budget": None}, "access.output"),
        ({"weights": "open", "output": "label", "budget": -1}, "access.budget"),
        ({"weights": "open", "output": "label", "budget": 0}, "access.budget"),
        ({"weights": "open", "output": "label", "budget": 2.5}, "access.budget"),
    ],
)
def test_policy_rejects_bad_values_naming_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AccessPolicy(**kwargs)


def account_oracle(plan: bool = True, **policy):
    model = CountingModel()
    base = {"weights": "hidden", "output": "label", "budget": None}
    oracle = Oracle(model, AccessPolicy(**{**base, **policy}), input_shape=(1, 4, 4), n_classes=5)
    if plan:
        oracle.plan(PLANNED)
    return model, oracle


def test_account_limit_refuses_rows_past_it_and_accounts_are_separate():
    model, oracle = account_oracle(account_limit=5, accounts=2)
    oracle.query(inputs(3), example=0, account=0)
    with pytest.raises(AccountLimitReached) as refused:
        oracle.query(inputs(4), example=0, account=0)
    assert refused.value.account == 0 and len(refused.value.answered) == 2
    with pytest.raises(AccountLimitReached):
        oracle.query(inputs(1), example=1, account=0)
    oracle.query(inputs(5), example=1, account=1)
    assert model.rows_evaluated == oracle.queries_total == 10
    assert not oracle.exhausted(0)  # refused by the account limit, not by the example's budget
    with pytest.raises(ValueError, match="account 2 does not exist"):
        oracle.query(inputs(1), example=1, account=2)


def test_account_quota_resets_when_the_simulated_window_has_passed():
    # one query per second; a window of 10 seconds; 5 queries per account per window
    model, oracle = account_oracle(account_limit=5, accounts=2, rate=60.0, window=10 / 3600)
    oracle.query(inputs(5), example=0, account=0)
    assert oracle.clock == pytest.approx(5.0)
    with pytest.raises(AccountLimitReached):
        oracle.query(inputs(6), example=0, account=1)
    assert oracle.clock == pytest.approx(10.0)
    oracle.query(inputs(5), example=0, account=0)  # account 0's window started at 0 s: it has reset
    assert model.rows_evaluated == 15
    assert [end for _, _, end in oracle.rows(0)] == pytest.approx(list(np.arange(1.0, 16.0)))
    assert [start for _, start, _ in oracle.rows(0)] == pytest.approx(list(np.arange(0.0, 15.0)))
    assert [account for account, _, _ in oracle.rows(0)] == [0] * 5 + [1] * 5 + [0] * 5
    assert oracle.accounts_used == 2


def test_shared_queries_come_out_of_the_examples_budget():
    model, oracle = account_oracle(plan=False, budget=10)
    with pytest.raises(ValueError, match="not planned"):
        oracle.query(inputs(1), example=SHARED)
    oracle.plan(4)  # four examples: 40 queries in all
    oracle.query(inputs(12), example=SHARED)
    with pytest.raises(BudgetExhausted) as refused:  # each example's share of the 12 is 3: 7 left
        oracle.query(inputs(8), example=0)
    assert len(refused.value.answered) == 7
    with pytest.raises(BudgetExhausted) as refused:
        oracle.query(inputs(40), example=SHARED)
    assert len(refused.value.answered) == 40 - 19
    assert oracle.queries_total == model.rows_evaluated == 40


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"account_limit": 0}, "access.account_limit"),
        ({"rate": -1.0}, "access.rate"),
        ({"window": 0}, "access.window"),
        ({"accounts": 0}, "access.accounts"),
        ({"account_cost": -5}, "access.account_cost"),
    ],
)
def test_rate_limit_settings_reject_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AccessPolicy("hidden", "label", None, **kwargs)
