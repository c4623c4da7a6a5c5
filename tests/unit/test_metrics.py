"""Success is the judge's re-checked label changing within eps; metrics follow from the per-example table."""
from __future__ import annotations

import math

import numpy as np
import pytest

from attacks.base import AttackResult
from experiments.metrics import evaluate, per_example_csv, success_curve


def result(x_adv, queries, exhausted=None, to_success=None):
    n = len(x_adv)
    return AttackResult(
        x_adv=np.asarray(x_adv, dtype=np.float32),
        queries=np.asarray(queries, dtype=np.int64),
        budget_exhausted=np.zeros(n, bool) if exhausted is None else np.asarray(exhausted),
        queries_to_success=np.full(n, -1) if to_success is None else np.asarray(to_success),
    )


def test_success_needs_a_changed_label_within_eps():
    x = np.full((4, 1, 2, 2), 0.5, dtype=np.float32)
    y = np.array([0, 1, 2, 3])
    initial = np.array([0, 1, 2, 9])  # the last example is already wrong: not attacked
    x_adv = x[:3].copy()
    x_adv[0] += 0.1  # label changes, within eps: success
    x_adv[1] += 0.3  # label changes, outside eps: failure
    x_adv[2] += 0.05  # label unchanged: failure
    evaluation = evaluate(
        index=np.arange(4), y=y, initial=initial, final_attacked=np.array([5, 5, 2]), x_attacked=x[:3],
        result=result(x_adv, [3, 10, 10], exhausted=[False, True, True], to_success=[3, -1, -1]),
        eps=0.1, threat_model="score_based",
    )
    m = evaluation.metrics
    assert evaluation.per_example["success"].tolist() == [True, False, False, False]
    assert m["clean_accuracy"] == 0.75 and m["robust_accuracy"] == 0.5
    assert m["attack_success_rate"] == pytest.approx(1 / 3)
    assert (m["queries_total"], m["queries_median"]) == (23, 10)
    assert m["queries_mean"] == pytest.approx(23 / 3)
    assert m["perturbation_linf_mean"] == pytest.approx(0.1)
    assert m["budget_exhausted_fraction"] == pytest.approx(2 / 3)
    assert evaluation.per_example["final_prediction"].tolist() == [5, 5, 2, 9]


def test_no_success_gives_undefined_perturbation_not_zero():
    x = np.zeros((2, 1, 1, 1), dtype=np.float32)
    evaluation = evaluate(
        index=np.arange(2), y=np.array([1, 1]), initial=np.array([1, 1]), final_attacked=np.array([1, 1]),
        x_attacked=x, result=result(x, [0, 0]), eps=0.1, threat_model="white_box",
    )
    assert math.isnan(evaluation.metrics["perturbation_linf_mean"])
    assert evaluation.metrics["attack_success_rate"] == 0.0
    assert evaluation.success_curve == []


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


def test_per_example_csv_has_the_documented_columns():
    x = np.zeros((1, 1, 1, 1), dtype=np.float32)
    evaluation = evaluate(
        index=np.array([7]), y=np.array([2]), initial=np.array([2]), final_attacked=np.array([4]),
        x_attacked=x, result=result(x + 0.05, [12]), eps=0.1, threat_model="decision_based",
    )
    lines = per_example_csv(evaluation.per_example).splitlines()
    assert lines[0] == "index,label,initial_prediction,final_prediction,attacked,success,queries,linf"
    assert lines[1] == "7,2,2,4,1,1,12,0.05"
