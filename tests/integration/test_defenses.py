"""Every defense through the real runner: it deploys, the Oracle applies it, and the run logs its cost to honest
users beside the attack's numbers; with a detector, what it caught, its benign false positives (counted on the
benign stream, never a constant) and its ROC; and no banned account is ever answered again."""

from __future__ import annotations

import mlflow
import pytest
from helpers.configs import tiny_settings
from mlflow.tracking import MlflowClient

from gavel.experiments import runner
from gavel.experiments.config import group_options
from gavel.targets.access import AttackerClient

SCORES = ["access=hidden_probabilities", "access.budget=30"]
DETECTORS = [name for name in group_options("defense") if name in ("knn_similarity", "blacklight", "piha")]
DETECTION_KEYS = {
    "detection_rate",
    "detections_total",
    "rejected_query_fraction",
    "false_positive_rate",
    "false_positive_rate_accounts",
    "benign_queries",
}
SMALL_STREAM = ["benign.accounts=4", "benign.queries_per_account=20"]


def last_run():
    return MlflowClient().get_run(mlflow.last_active_run().info.run_id)


def test_the_three_detectors_are_options():
    assert DETECTORS == ["blacklight", "knn_similarity", "piha"]


@pytest.mark.parametrize("defense", group_options("defense"))
def test_every_defense_yaml_runs_through_the_real_runner(defense):
    settings = tiny_settings("square", *SCORES, f"defense={defense}", *SMALL_STREAM)
    metrics = runner.run(settings, runner.prepare(settings))
    run = last_run()
    assert run.info.status == "FINISHED" and run.data.tags["defense"] == defense
    assert 0.0 <= metrics["attack_success_rate"] <= 1.0 and metrics["n_attacked"] > 0
    assert 0.0 <= metrics["flip_rate"] <= 1.0 and 0.0 <= metrics["calibration_error"] <= 1.0
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}
    if defense in DETECTORS:
        assert DETECTION_KEYS <= set(metrics)
        assert metrics["benign_queries"] > 0
        assert "detector_roc.png" in artifacts
    else:
        assert not DETECTION_KEYS & set(metrics)
    if defense == "none":
        assert metrics["flip_rate"] == 0.0


@pytest.mark.parametrize("defense", DETECTORS)
def test_no_query_is_answered_after_a_ban(defense):
    """Square on several accounts against a detector: after the call that banned an account, the ledger shows
    nothing of that account evaluated or charged again, and every rejected row was charged to its example."""
    settings = tiny_settings("square", *SCORES, f"defense={defense}", "access.accounts=3", *SMALL_STREAM)
    prepared = runner.prepare(settings)
    with mlflow.start_run():  # the stages record tags (the judge's cache) on the active run
        provisioned = runner.provision(settings, prepared)
        selection = runner.select_examples(settings, provisioned, settings.attack_instance)
        client = AttackerClient(provisioned.oracle)
        result = runner.run_attack(settings, provisioned, selection, settings.attack_instance, client)
        runner.audit_ledger(provisioned.oracle, result)
    oracle = provisioned.oracle
    assert oracle.detections, "the detector should catch an unadapted Square within 30 queries per example"
    banned_in_call = {d.account: d.call for d in oracle.detections}
    for entry in oracle.ledger:
        if entry.call > banned_in_call.get(entry.account, entry.call):
            assert entry.evaluated == 0 and entry.rejected == 0
    assert oracle.queries_total == oracle.rows_evaluated + sum(e.rejected for e in oracle.ledger)
    assert int(result.queries.sum()) == oracle.queries_total


def test_the_false_positive_rate_is_counted_on_the_benign_stream():
    """The same detector, two honest streams: all fresh inputs, and half re-submissions. Re-submitting the same
    photo is what honest users do and what a hash-matching detector flags: the rate must follow the stream."""
    fresh = tiny_settings(
        "square",
        *SCORES,
        "defense=blacklight",
        *SMALL_STREAM,
        "benign.mix.fresh=1.0",
        "benign.mix.resubmit=0",
        "benign.mix.crop_shift=0",
        "benign.mix.brightness=0",
    )
    repeats = tiny_settings(
        "square",
        *SCORES,
        "defense=blacklight",
        *SMALL_STREAM,
        "benign.mix.fresh=0.5",
        "benign.mix.resubmit=0.5",
        "benign.mix.crop_shift=0",
        "benign.mix.brightness=0",
    )
    clean = runner.run(fresh, runner.prepare(fresh))
    resubmitted = runner.run(repeats, runner.prepare(repeats))
    assert resubmitted["false_positive_rate_accounts"] > clean["false_positive_rate_accounts"]
    assert clean["benign_queries"] == 4 * 20  # no honest account banned: every query sent


def attacked_through_the_runner(*overrides: str):
    settings = tiny_settings("square", *SCORES, *overrides, *SMALL_STREAM)
    prepared = runner.prepare(settings)
    with mlflow.start_run():
        provisioned = runner.provision(settings, prepared)
        selection = runner.select_examples(settings, provisioned, settings.attack_instance)
        client = AttackerClient(provisioned.oracle)
        result = runner.run_attack(settings, provisioned, selection, settings.attack_instance, client)
        runner.audit_ledger(provisioned.oracle, result)
    return provisioned.oracle, result


def test_without_bans_each_flagged_query_is_rejected_and_charged_and_the_account_goes_on():
    oracle, result = attacked_through_the_runner("defense=piha", "defense.on_detection=reject")
    rejected = sum(e.rejected for e in oracle.ledger)
    assert rejected > 0 and len(oracle.detections) == rejected and not oracle.banned
    assert {e.account for e in oracle.ledger} == {0}
    unfooled = result.queries_to_success < 0
    assert unfooled.any() and (result.queries[unfooled] == 30).all()  # rejections spend the budget, not end it
    assert int(result.queries.sum()) == oracle.queries_total


def test_a_spreading_sybil_attacker_sends_each_examples_queries_round_its_accounts():
    oracle, result = attacked_through_the_runner("access.accounts=3", "access.sybil=spread")
    per_example: dict = {}
    for entry in oracle.ledger:
        if entry.evaluated:
            per_example.setdefault(entry.example, set()).add(entry.account)
    long_enough = [e for e, q in enumerate(result.queries) if q >= 3]
    assert long_enough and all(per_example[e] == {0, 1, 2} for e in long_enough)
    assert int(result.queries.sum()) == oracle.queries_total
