"""The runner end to end, in process: every attack yaml, MLflow keys, FAILED on error, determinism, cache."""

from __future__ import annotations

import mlflow
import pytest
from helpers.configs import threat_model_of, tiny_settings
from mlflow.tracking import MlflowClient

from gavel.experiments import runner
from gavel.experiments.config import group_options
from gavel.targets.access import DECISION_BASED, SCORE_BASED

METRIC_KEYS = {
    "clean_accuracy",
    "robust_accuracy",
    "robust_accuracy_ci_low",
    "robust_accuracy_ci_high",
    "attack_success_rate",
    "attack_success_rate_ci_low",
    "attack_success_rate_ci_high",
}
QUERY_KEYS = {"queries_total", "queries_mean", "queries_median", "budget_exhausted_fraction"}
"""Only for attacks that send queries; white-box attacks send none, and leave them out rather than log 0."""
TAG_KEYS = {"threat_model", "attack", "judge", "dataset", "access.output", "git_sha"}


def last_run():
    return MlflowClient().get_run(mlflow.last_active_run().info.run_id)


def run_tiny(attack: str, *overrides: str) -> dict:
    """The whole runner on `tiny_settings(attack, *overrides)`; its metrics."""
    settings = tiny_settings(attack, *overrides)
    return runner.run(settings, runner.prepare(settings))


@pytest.mark.parametrize("attack", group_options("attack"))
def test_every_attack_yaml_runs_through_the_real_runner(attack):
    settings = tiny_settings(attack)
    metrics = runner.run(settings, runner.prepare(settings))
    assert 0.0 <= metrics["attack_success_rate"] <= 1.0
    assert metrics["robust_accuracy"] <= metrics["clean_accuracy"]
    assert metrics["n_attacked"] > 0
    run = last_run()
    assert run.info.status == "FINISHED"
    assert METRIC_KEYS <= set(run.data.metrics)
    sends_queries = threat_model_of(attack).name != "white_box"  # transfer: one query per example, to check it
    assert QUERY_KEYS & set(run.data.metrics) == (QUERY_KEYS if sends_queries else set())
    assert ("perturbation_linf_mean" in run.data.metrics) == (metrics["attack_success_rate"] > 0)
    assert run.data.tags["attack"] == attack == settings.attack.name
    has_curve = "attack_success_rate_at_queries" in run.data.metrics
    assert has_curve == (threat_model_of(attack) in (SCORE_BASED, DECISION_BASED))


def test_run_logs_the_conventional_names_params_tags_and_artifacts():
    settings = tiny_settings("square", "experiment_name=conventions")
    runner.run(settings, runner.prepare(settings))
    run = last_run()
    client = MlflowClient()
    assert client.get_experiment(run.info.experiment_id).name == "conventions"
    assert run.info.run_name == "square-probabilities-b30-cnn-s0"
    assert TAG_KEYS <= set(run.data.tags)
    assert run.data.tags["threat_model"] == "score_based" and run.data.tags["access.output"] == "probabilities"
    assert run.data.tags["dataset"] == "digits" and run.data.tags["judge"] == "cnn"
    params = run.data.params
    assert params["access.budget"] == "30" and params["attack.eps"] == "0.1" and params["target.arch.width"] == "32"
    assert params["data.split.eval"] == "0.2"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "per_example.csv", "adversarial_grid.png"} <= artifacts
    curve = client.get_metric_history(run.info.run_id, "attack_success_rate_at_queries")
    steps = [m.step for m in curve]
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] <= 30
    assert curve[-1].value <= run.data.metrics["attack_success_rate"]
    per_example = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/per_example.csv").splitlines()
    assert len(per_example) == 1 + settings.n_examples
    rows = [dict(zip(per_example[0].split(","), line.split(","))) for line in per_example[1:]]
    assert sum(int(r["queries"]) for r in rows) == run.data.metrics["queries_total"]


def test_a_run_that_fails_ends_failed(monkeypatch):
    from gavel.attacks.query.square import Square

    def broken(self, *args, **kwargs):
        raise RuntimeError("attack blew up")

    monkeypatch.setattr(Square, "run", broken)
    with pytest.raises(RuntimeError, match="attack blew up"):
        run_tiny("square")
    assert last_run().info.status == "FAILED"


@pytest.mark.parametrize("attack", ["square", "hopskipjump", "transfer_pgd"])
def test_same_seed_gives_the_same_metrics(attack):
    first = run_tiny(attack)
    second = run_tiny(attack)
    assert first == pytest.approx(second, nan_ok=True)


def test_second_run_loads_the_judge_from_cache_and_says_so():
    run_tiny("pgd", "seed=7")
    assert last_run().data.tags["judge_cache"] == "miss"
    run_tiny("pgd", "seed=7")
    assert last_run().data.tags["judge_cache"] == "hit"


def test_the_judge_is_attacked_only_where_it_is_right():
    run_tiny("pgd", "n_examples=40")
    run = last_run()
    lines = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/per_example.csv").splitlines()[1:]
    for line in lines:
        index, label, initial, final, attacked, success, queries, queries_to_success, linf, l2 = line.split(",")
        assert attacked == ("1" if label == initial else "0")
        if attacked == "0":
            assert success == "0" and final == initial and float(linf) == float(l2) == 0


def test_rate_limit_turns_queries_into_time_and_accounts_into_cost():
    m = run_tiny(
        "square",
        "access.rate=2",
        "access.account_limit=20",
        "access.accounts=5",
        "access.account_cost=3.5",
        "n_examples=12",
    )
    assert m["campaign_hours"] == pytest.approx(m["queries_total"] / 2 / 60)
    assert m["accounts_used"] <= 5 and m["campaign_cost"] == pytest.approx(3.5 * m["accounts_used"])
    if m["attack_success_rate"] > 0:
        assert m["time_to_compromise_hours_median"] > 0 and m["cost_to_compromise_median"] >= 3.5


def test_artifacts_live_beside_the_store_not_in_the_working_folder(isolated_stores):
    """A test session's runs write nothing into the repository: a new experiment in a local sqlite store keeps
    its artifacts in mlruns/ beside the database, wherever the job runs."""
    run_tiny("fgsm", "experiment_name=beside_the_store")
    run = last_run()
    assert run.info.artifact_uri.startswith((isolated_stores / "mlruns").resolve().as_uri())
