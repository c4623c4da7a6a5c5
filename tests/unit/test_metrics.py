"""Success is the judge's re-checked verdict meeting the goal within eps; metrics follow from the table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gavel.attacks.base import AttackResult, Goal
from gavel.experiments.metrics import Compromise, compromise_from_ledger, evaluate, per_example_csv, success_curve
from gavel.targets.access import (
    DECISION_BASED,
    HYBRID,
    SCORE_BASED,
    TRANSFER,
    WHITE_BOX,
    AccessPolicy,
    AttackerClient,
    Oracle,
    ThreatModel,
)


def result(x_adv, queries, exhausted=None, to_success=None):
    n = len(x_adv)
    return AttackResult(
        x_adv=np.asarray(x_adv, dtype=np.float32),
        queries=np.asarray(queries, dtype=np.int64),
        budget_exhausted=np.zeros(n, bool) if exhausted is None else np.asarray(exhausted),
        queries_to_success=np.full(n, -1) if to_success is None else np.asarray(to_success),
    )


def free(n, shared=0):
    return Compromise(np.zeros(n), np.zeros(n), shared, 0.0, 0, 0.0)


def test_success_needs_a_changed_label_within_eps():
    x = np.full((4, 1, 2, 2), 0.5, dtype=np.float32)
    y = np.array([0, 1, 2, 3])
    initial = np.array([0, 1, 2, 9])  # the last example is already wrong: not attacked
    x_adv = x[:3].copy()
    x_adv[0] += 0.1  # label changes, within eps: success
    x_adv[1] += 0.3  # label changes, outside eps: failure
    x_adv[2] += 0.05  # label unchanged: failure
    evaluation = evaluate(
        index=np.arange(4),
        x=x,
        y=y,
        initial=initial,
        attacked=initial == y,
        final_attacked=np.array([5, 5, 2]),
        result=result(x_adv, [3, 10, 10], exhausted=[False, True, True], to_success=[3, -1, -1]),
        goal=Goal(0.1),
        threat_model=SCORE_BASED,
        compromise=free(3, shared=6),
    )
    m = evaluation.metrics
    assert evaluation.per_example["success"].tolist() == [True, False, False, False]
    assert m["clean_accuracy"] == 0.75 and m["robust_accuracy"] == 0.5
    assert m["attack_success_rate"] == pytest.approx(1 / 3)
    assert (m["queries_total"], m["queries_shared"], m["queries_median"]) == (29, 6, 12)  # 6 shared: 2 each
    assert m["queries_mean"] == pytest.approx(29 / 3)
    assert m["perturbation_linf_mean"] == pytest.approx(0.1)
    assert m["perturbation_l2_mean"] == pytest.approx(0.2)
    assert m["budget_exhausted_fraction"] == pytest.approx(2 / 3)
    assert evaluation.per_example["final_prediction"].tolist() == [5, 5, 2, 9]


def test_targeted_goal_needs_the_target_verdict_and_l2_goal_measures_l2():
    x = np.zeros((3, 1, 1, 4), dtype=np.float32)
    x_adv = x + np.array([0.4, 0.4, 0.0, 0.0], dtype=np.float32)  # L2 0.566, L-inf 0.4
    targeted = Goal(eps=0.5, norm="inf", target=7)
    assert targeted.fooled([7, 3, 7], [1, 1, 7]).tolist() == [True, False, True]
    assert Goal(eps=0.5, norm="2").within(x_adv, x).tolist() == [False] * 3
    assert Goal(eps=0.6, norm="2").within(x_adv, x).tolist() == [True] * 3
    assert Goal(eps=0.01, norm=None).within(x_adv, x).all()  # a patch: only the verdict counts


def test_metrics_that_do_not_apply_are_left_out_not_zero():
    x = np.zeros((2, 1, 1, 1), dtype=np.float32)
    evaluation = evaluate(
        index=np.arange(2),
        x=x,
        y=np.array([1, 1]),
        initial=np.array([1, 1]),
        attacked=np.array([True, True]),
        final_attacked=np.array([1, 1]),
        result=result(x, [0, 0]),
        goal=Goal(0.1),
        threat_model=WHITE_BOX,
        compromise=free(2),
    )
    m = evaluation.metrics
    # no success: no perturbation size; a white-box attack sends no query; no clock, no price
    absent = {"perturbation_linf_mean", "queries_median", "queries_total", "success_auc", "accounts_used"}
    absent |= {"time_to_compromise_hours_median", "cost_to_compromise_median", "campaign_hours", "campaign_cost"}
    assert not absent & set(m)
    assert all(math.isfinite(v) for v in m.values())
    assert m["attack_success_rate"] == 0.0 and m["attack_success_rate_ci_low"] == 0.0
    assert 0.0 < m["attack_success_rate_ci_high"] < 1.0  # 0 of 2: anything up to about 0.84 fits
    assert evaluation.success_curve == []


def test_every_rate_carries_its_interval_and_query_attacks_their_curve_area():
    n = 40
    x = np.zeros((n, 1, 1, 1), dtype=np.float32)
    rng = np.random.default_rng(0)
    fooled = rng.random(n) < 0.4
    at = np.where(fooled, rng.integers(1, 100, n), -1)
    evaluation = evaluate(
        index=np.arange(n),
        x=x,
        y=np.ones(n, dtype=np.int64),
        initial=np.ones(n, dtype=np.int64),
        attacked=np.ones(n, dtype=bool),
        final_attacked=np.where(fooled, 0, 1),
        result=result(x + 0.05, np.where(fooled, at, 100), to_success=at),
        goal=Goal(0.1),
        threat_model=SCORE_BASED,
        compromise=Compromise(np.zeros(n), np.zeros(n), 0, 0.0, 1, 0.0, budget=100),
    )
    m = evaluation.metrics
    for name in ("attack_success_rate", "robust_accuracy", "queries_median", "success_auc"):
        assert m[f"{name}_ci_low"] <= m[name] <= m[f"{name}_ci_high"], name
    assert m["attack_success_rate_ci_high"] - m["attack_success_rate_ci_low"] > 0.2  # n=40 is not much
    assert 0 < m["success_auc"] < m["attack_success_rate"]  # no example was fooled by its first query


@pytest.mark.parametrize(
    "threat_model, has_curve",
    [(WHITE_BOX, False), (TRANSFER, False), (SCORE_BASED, True), (DECISION_BASED, True), (HYBRID, True)],
    ids=lambda v: v.name if isinstance(v, ThreatModel) else str(v),
)
def test_only_attacks_that_spend_a_query_budget_get_a_success_curve(threat_model, has_curve):
    x = np.zeros((2, 1, 1, 1), dtype=np.float32)
    evaluation = evaluate(
        index=np.arange(2),
        x=x,
        y=np.array([1, 1]),
        initial=np.array([1, 1]),
        attacked=np.array([True, True]),
        final_attacked=np.array([0, 1]),
        result=result(x + 0.05, [3, 9], to_success=[3, -1]),
        goal=Goal(0.1),
        threat_model=threat_model,
        compromise=free(2),
    )
    assert evaluation.metrics["attack_success_rate"] == 0.5
    assert (evaluation.success_curve != []) == has_curve


def test_an_attack_with_zero_examples_is_an_error():
    with pytest.raises(ValueError, match="zero examples"):
        result(np.zeros((0, 1, 1, 1)), [])


def test_success_curve_counts_each_example_from_the_query_that_fooled_the_judge():
    r = result(np.zeros((4, 1, 1, 1)), [5, 40, 100, 100], to_success=[5, 40, -1, -1])
    success = np.array([True, True, True, False])  # the third succeeded on the re-check of its final input
    curve = dict(success_curve(success, r))
    assert sorted(curve) == [1, 2, 5, 10, 20, 50, 100]
    assert curve[1] == 0 and curve[5] == 0.25 and curve[20] == 0.25 and curve[50] == 0.5 and curve[100] == 0.75
    values = [curve[k] for k in sorted(curve)]
    assert values == sorted(values)


def test_time_and_cost_to_compromise_come_from_the_ledger():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    policy = AccessPolicy("hidden", "label", None, account_limit=4, accounts=3, rate=2.0, account_cost=5.0)
    oracle = Oracle(model, policy, input_shape=(1, 2, 2), n_classes=3)
    client = AttackerClient(oracle)
    client.plan(2)
    client.query(np.zeros((6, 1, 2, 2), np.float32), example=0)  # accounts 0 (4 rows) and 1 (2 rows)
    client.query(np.zeros((3, 1, 2, 2), np.float32), example=1)  # account 1 (2 rows), then account 2
    r = result(np.zeros((2, 1, 2, 2)), [6, 3], to_success=[6, 1])
    spent = compromise_from_ledger(oracle, r)
    assert spent.hours.tolist() == pytest.approx([6 * 0.5 / 60, 1 * 0.5 / 60])  # 2 queries a minute
    assert spent.cost.tolist() == [10.0, 5.0]  # example 0 needed two accounts; example 1's first query one
    assert spent.accounts_used == 3 and spent.campaign_hours == pytest.approx(9 * 0.5 / 60)


def test_per_example_csv_has_the_documented_columns():
    x = np.zeros((1, 1, 1, 1), dtype=np.float32)
    evaluation = evaluate(
        index=np.array([7]),
        x=x,
        y=np.array([2]),
        initial=np.array([2]),
        attacked=np.array([True]),
        final_attacked=np.array([4]),
        result=result(x + 0.05, [12]),
        goal=Goal(0.1),
        threat_model=DECISION_BASED,
        compromise=free(1),
    )
    lines = per_example_csv(evaluation.per_example).splitlines()
    assert (
        lines[0]
        == "index,label,initial_prediction,final_prediction,attacked,success,queries,queries_to_success,linf,l2"
    )
    assert lines[1] == "7,2,2,4,1,1,12,-1,0.05,0.05"  # fooled on the re-check only: never seen fooled by the attacker
