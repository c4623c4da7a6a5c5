"""`gavel gate`: thresholds on the newest matching runs' intervals, exit 0 / 1 / 2, JUnit XML and a summary."""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET

import mlflow
import pytest

from gavel.experiments.cli import gate_command
from gavel.reports.gate import PolicyError, load_policy, matching_runs


def logged(experiment: str, *, threat_model: str, budget, rate: float, low: float, high: float, **tags) -> str:
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"{threat_model}-{budget}", tags={"threat_model": threat_model, **tags}) as run:
        mlflow.log_param("access.budget", "null" if budget is None else budget)
        mlflow.log_metrics(
            {"attack_success_rate": rate, "attack_success_rate_ci_low": low, "attack_success_rate_ci_high": high}
        )
    return run.info.run_id


@pytest.fixture
def experiment(isolated_stores):
    name = f"gate-{uuid.uuid4().hex[:8]}"
    logged(name, threat_model="score_based", budget=100, rate=0.10, low=0.05, high=0.18)
    logged(name, threat_model="score_based", budget=1000, rate=0.30, low=0.22, high=0.39)
    logged(name, threat_model="decision_based", budget=100, rate=0.01, low=0.0, high=0.04)
    return name


def policy(tmp_path, experiment: str, *thresholds: str) -> str:
    path = tmp_path / "ci.yaml"
    path.write_text(f"experiment: {experiment}\nthresholds:\n" + "\n".join(thresholds) + "\n")
    return str(path)


def test_a_passing_gate_exits_0_and_writes_junit_and_a_summary(tmp_path, experiment):
    rule = "  - {where: {threat_model: score_based, budget_max: 100}, metric: attack_success_rate, max: 0.2}"
    assert gate_command(["--policy", policy(tmp_path, experiment, rule), "--out", str(tmp_path / "out")]) == 0
    suite = ET.parse(tmp_path / "out" / "gate.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("1", "0")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["verdict"] == "pass" and summary["checks"][0]["value"] == pytest.approx(0.18)  # the upper bound
    (run,) = [
        r for r in mlflow.search_runs(experiment_names=[experiment], output_format="list") if "gate.ci" in r.data.tags
    ]
    assert run.data.tags["gate.ci"] == "pass"


def test_the_upper_bound_fails_a_gate_the_point_estimate_would_pass(tmp_path, experiment):
    interval = "  - {where: {threat_model: score_based}, metric: attack_success_rate, max: 0.35}"
    point = "  - {where: {threat_model: score_based}, metric: attack_success_rate, max: 0.35, bound: point}"
    assert gate_command(["--policy", policy(tmp_path, experiment, interval), "--out", str(tmp_path / "a")]) == 1
    assert gate_command(["--policy", policy(tmp_path, experiment, point), "--out", str(tmp_path / "b")]) == 0
    suite = ET.parse(tmp_path / "a" / "gate.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")  # budgets 100 and 1000: the 1000 run fails


def test_a_regression_from_a_baseline_run(tmp_path, experiment):
    baseline = logged(experiment + "-base", threat_model="decision_based", budget=100, rate=0.0, low=0.0, high=0.03)
    rule = (
        f"  - {{where: {{threat_model: decision_based}}, metric: attack_success_rate, baseline: {baseline}, "
        "max_increase: 0.005}"
    )
    assert gate_command(["--policy", policy(tmp_path, experiment, rule), "--out", str(tmp_path / "out")]) == 1


@pytest.mark.parametrize(
    "rule, message",
    [
        ("  - {metric: attack_success_rate}", "exactly one of max, min"),
        ("  - {metric: attack_success_rate, max: high}", "max='high': allowed: a number"),
        ("  - {metric: attack_success_rate, max: 0.2, where: {colour: red}}", "where.colour: no such key"),
        ("  - {metric: attack_success_rate, max_increase: 0.1}", "needs a baseline run id"),
        ("  - {metric: attack_success_rate, max: 0.2, bound: lower}", "bound='lower': allowed: interval, point"),
    ],
)
def test_a_malformed_policy_is_refused_with_one_line_and_exit_2(tmp_path, experiment, rule, message, capsys):
    path = policy(tmp_path, experiment, rule)
    with pytest.raises(PolicyError, match=message.replace("(", r"\(")):
        load_policy(path)
    assert gate_command(["--policy", path, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gavel: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_no_matching_run_is_an_error_not_a_pass(tmp_path, experiment, capsys):
    rule = "  - {where: {threat_model: transfer}, metric: robust_accuracy, min: 0.6}"
    assert gate_command(["--policy", policy(tmp_path, experiment, rule), "--out", str(tmp_path / "out")]) == 2
    assert "no FINISHED run" in capsys.readouterr().err


def test_the_sample_policy_is_well_formed():
    policy = load_policy("conf/gate/demo.yaml")
    name, experiment, run, thresholds = policy.name, policy.experiment, policy.run, policy.thresholds
    assert (name, experiment, run) == ("demo", "hiding_vs_ratelimit", ["experiment=hiding_vs_ratelimit"])
    assert len(thresholds) == 3


def test_the_same_config_from_two_sweeps_is_one_configuration_the_newest_run(isolated_stores):
    """A run label names a job within its sweep ('03 square budget100'): it is no part of the configuration, nor is
    Hydra's + before a key."""
    name = f"gate-{uuid.uuid4().hex[:8]}"
    older = logged(
        name, threat_model="score_based", budget=100, rate=0.1, low=0.0, high=0.2,
        overrides="attack=square access.budget=100 run_label='03 square budget100'",
    )  # fmt: skip
    newer = logged(
        name, threat_model="score_based", budget=100, rate=0.1, low=0.0, high=0.2,
        overrides="+attack=square access.budget=100 run_label='1 square'",
    )  # fmt: skip
    other = logged(
        name, threat_model="score_based", budget=100, rate=0.1, low=0.0, high=0.2,
        overrides="attack=square access.budget=100 attack.eps=0.05 run_label='2 eps0.05'",
    )  # fmt: skip
    found = {run.info.run_id for run in matching_runs(name, {"threat_model": "score_based"})}
    assert found == {newer, other} and older not in found
