"""The shapes the literature reports, reproduced at small size through the real runner:

- the stateful detectors catch unadapted Square and HopSkipJump within tens of queries, at a benign per-query
  false-positive rate of at most 1% on fresh held-out inputs;
- the adaptive attacker with many accounts brings success under detection back toward the undefended level, and
  spreading each example's queries over them evades a detector that watches each account alone;
- output noise lowers score-based success, and its cost to honest users is logged beside it;
- input noise lowers score-based success at almost no cost in clean accuracy.

Two configurations are compared on the same examples with McNemar's test (`helpers.paired`), one-sided in
the direction the literature reports, at sizes where the shape holds on any judge (`GAVEL_TEST_SEED` runs the
suite on other weights), never by a margin tuned on one machine's trained judge.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import helpers.paired as paired_helpers
import mlflow
import numpy as np
import pytest

from gavel.experiments import runner
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings

DETECTORS = ("knn_similarity", "blacklight", "piha")
FRESH_STREAM = [
    "benign.accounts=10",
    "benign.queries_per_account=40",
    "benign.mix.fresh=1.0",
    "benign.mix.resubmit=0",
    "benign.mix.crop_shift=0",
    "benign.mix.brightness=0",
]
ATTACKS = {
    "square": ["access=hidden_probabilities", "access.budget=1000"],
    "hopskipjump": ["access=hidden_label", "access.budget=1000"],
}


@dataclass
class Measured:
    metrics: dict
    fooled: dict[int, bool]
    """Each attacked example's success, by its index in the evaluation set (read back from per_example.csv)."""

    def __getitem__(self, key: str) -> float:
        return self.metrics[key]

    def __contains__(self, key: str) -> bool:
        return key in self.metrics


def run(attack: str, *overrides: str, n_examples: int = 40) -> Measured:
    """The real config (the attack's own hyperparameters, not the smoke tests' shrunk ones)."""
    settings = RunSettings.from_config(
        compose_config([f"attack={attack}", *ATTACKS[attack], f"n_examples={n_examples}", *overrides])
    )
    metrics = runner.run(settings, runner.prepare(settings))
    text = mlflow.artifacts.load_text(f"runs:/{mlflow.last_active_run().info.run_id}/per_example.csv")
    rows = [row for row in csv.DictReader(io.StringIO(text)) if float(row["attacked"]) > 0]
    assert rows, "no example was attacked: nothing to compare"
    return Measured(metrics, {int(float(row["index"])): float(row["success"]) > 0 for row in rows})


def paired(first: Measured, second: Measured) -> tuple[np.ndarray, np.ndarray]:
    """Each run's success on the examples both attacked (the same selection, bar an example a defense's own
    randomness kept from being attacked)."""
    shared = sorted(set(first.fooled) & set(second.fooled))
    assert len(shared) >= 0.9 * max(len(first.fooled), len(second.fooled)), "the runs attacked other examples"
    return np.array([first.fooled[i] for i in shared]), np.array([second.fooled[i] for i in shared])


def less_success(fewer: Measured, more: Measured) -> None:
    paired_helpers.less_success(*paired(fewer, more))


def no_less_success(first: Measured, second: Measured) -> None:
    paired_helpers.no_less_success(*paired(first, second))


@pytest.mark.slow
@pytest.mark.parametrize("defense", DETECTORS)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_detectors_catch_unadapted_attacks_within_tens_of_queries_at_a_low_benign_rate(attack, defense):
    m = run(attack, f"defense={defense}", "access.accounts=5", *FRESH_STREAM)
    assert m["detection_rate"] > 0.5
    assert m["queries_to_detection_median"] < 100  # tens of queries
    assert m["false_positive_rate"] <= 0.01
    assert m["benign_queries"] > 0


@pytest.mark.slow
def test_the_adaptive_sybil_attacker_wins_back_what_detection_took():
    undefended = run("square")
    one_account = run("square", "defense=knn_similarity", *FRESH_STREAM)
    adaptive_sybil = run(
        "square", "defense=knn_similarity", "access.accounts=100", "attack.adaptive=true", "attack.blinding=0.02",
        *FRESH_STREAM,
    )  # fmt: skip
    less_success(one_account, undefended)
    less_success(one_account, adaptive_sybil)
    assert adaptive_sybil["detections_total"] > 1  # the win was paid for in banned accounts


@pytest.mark.slow
def test_spreading_each_examples_queries_over_accounts_evades_a_detector_that_watches_each_alone():
    """A Sybil attacker that sends each example's queries round 100 accounts leaves each account's history too
    thin to look like an attack; a detector that watches every account together still sees it."""
    undefended = run("square")
    spread = ["defense=knn_similarity", "access.accounts=100", "access.sybil=spread", *FRESH_STREAM]
    per_account = run("square", *spread)
    everyone = run("square", *spread, "defense.scope=global")
    assert per_account["detections_total"] < 100  # accounts left over: the detector never cut the attack off
    no_less_success(per_account, undefended)
    less_success(everyone, per_account)
    assert everyone["detection_rate"] > per_account["detection_rate"]


@pytest.mark.slow
def test_output_noise_lowers_score_based_success_and_its_cost_is_logged():
    plain = run("square")
    noisy = run("square", "defense=output_noise")
    less_success(noisy, plain)
    assert noisy["calibration_error"] > plain["calibration_error"]
    assert {"clean_accuracy", "flip_rate"} <= set(noisy.metrics)


@pytest.mark.slow
def test_input_noise_lowers_score_based_success_at_no_cost_in_clean_accuracy():
    """What EOT wins back is reported by the randomised_answers preset (docs/defenses.md); at this size its gain is
    within the sampling noise of a chaotic attack (thread counts alone move it), so it is not asserted here."""
    plain = run("square", n_examples=100)
    noisy = run("square", "defense=input_noise", "defense.sigma=0.05", n_examples=100)
    less_success(noisy, plain)
    assert noisy["clean_accuracy"] >= plain["clean_accuracy"] - 0.02
