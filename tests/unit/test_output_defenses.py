"""Output hiding: each filter does what it says to every answer, refuses the API outputs it cannot apply to,
agrees with ART where gavel wrote its own, and its cost to honest users is measured correctly."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from art.defences.postprocessor import ClassLabels, GaussianNoise
from omegaconf import OmegaConf
from torch import nn

from gavel.defenses.base import Defense, OperatorKit
from gavel.defenses.output.labels_only import LabelsOnly
from gavel.defenses.output.output_noise import OutputNoise, add_noise
from gavel.defenses.output.reverse_sigmoid import ReverseSigmoid
from gavel.defenses.output.rounded import Rounded
from gavel.defenses.output.top_k import TopK
from gavel.defenses.quality import clean_accuracy, expected_calibration_error, flip_rate, verdicts
from gavel.experiments.settings import read_component
from gavel.experiments.validation import ConfigError, Node
from gavel.targets.access import DECISION_BASED, SCORE_BASED, AccessPolicy, Output
from gavel.targets.params import declared_hyperparameters

CLASSES = 10
CONF = Path(__file__).resolve().parents[2] / "conf" / "defense"

DEFENSES = {
    "rounded": (Rounded, ("probabilities",)),
    "top_k": (TopK, ("probabilities",)),
    "reverse_sigmoid": (ReverseSigmoid, ("probabilities",)),
    "output_noise": (OutputNoise, ("probabilities", "label")),
    "labels_only": (LabelsOnly, ("probabilities",)),
}
"""Each defense's class and the `access.output` values it applies to, as documented."""


def softmax_rows(n: int, spread: float = 1.0, seed: int = 0) -> np.ndarray:
    """Probability rows from logits of standard deviation `spread` (larger: more confident rows)."""
    logits = np.random.default_rng(seed).normal(size=(n, CLASSES)) * spread
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def operator(seed: int = 0, n_classes: int = CLASSES) -> OperatorKit:
    return OperatorKit(
        benign_x=np.zeros((2, 1, 8, 8), np.float32), benign_y=np.zeros(2, np.int64), n_classes=n_classes, seed=seed
    )


def answer_filter(defense: Defense, seed: int = 0):
    return defense.deploy(nn.Identity(), operator(seed)).output_filter


@pytest.mark.parametrize("name", DEFENSES)
def test_each_filter_keeps_the_answer_shape_and_the_judge(name):
    cls, _ = DEFENSES[name]
    judge = nn.Linear(4, CLASSES)
    shield = cls().deploy(judge, operator())
    p = softmax_rows(64)
    answers = shield.output_filter(p)
    assert cls.kind == "output"
    assert shield.model is judge and shield.detector is None
    assert answers.shape == p.shape and answers.dtype == np.float32
    assert np.all(np.isfinite(answers)) and answers.min() >= 0
    assert not np.array_equal(answers, p), "the filter changed nothing"


@pytest.mark.parametrize("decimals", [1, 2, 3])
def test_rounded_answers_have_the_stated_decimals(decimals):
    p = softmax_rows(200)
    answers = answer_filter(Rounded(decimals=decimals))(p)
    scaled = answers.astype(np.float64) * 10**decimals
    np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-3)
    assert np.abs(answers - p).max() <= 0.5 * 10**-decimals + 1e-6
    assert np.abs(answers - p).max() > 0.1 * 10**-decimals


@pytest.mark.parametrize("k", [1, 3])
def test_top_k_keeps_k_scores_as_they_are_and_the_verdict(k):
    p = softmax_rows(200)
    answers = answer_filter(TopK(k=k))(p)
    assert np.all((answers > 0).sum(axis=1) == k)
    np.testing.assert_array_equal(answers.argmax(axis=1), p.argmax(axis=1))
    kept = answers > 0
    np.testing.assert_array_equal(answers[kept], p[kept])
    np.testing.assert_array_equal(np.sort(answers, axis=1)[:, -k:], np.sort(p, axis=1)[:, -k:])


def test_top_k_breaks_ties_as_the_verdict_does():
    p = np.array([[0.2, 0.4, 0.4, 0.0], [0.3, 0.3, 0.3, 0.1]], np.float32)
    answers = TopK(k=1).deploy(nn.Identity(), operator(n_classes=4)).output_filter(p)
    np.testing.assert_array_equal(answers, np.array([[0, 0.4, 0, 0], [0.3, 0, 0, 0]], np.float32))


def test_top_k_refuses_a_k_that_hides_nothing():
    with pytest.raises(ValueError, match=r"^defense\.k=10: .*allowed: 1 to 9$"):
        TopK(k=CLASSES).deploy(nn.Identity(), operator())


def test_reverse_sigmoid_changes_the_scores_and_keeps_the_verdict():
    p = softmax_rows(2000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ART's clipping in float32 would divide by zero on confident rows
        answers = answer_filter(ReverseSigmoid())(p)
        confident = answer_filter(ReverseSigmoid(beta=0.5, gamma=2.0))(softmax_rows(2000, spread=10.0))
    np.testing.assert_array_equal(answers.argmax(axis=1), p.argmax(axis=1))
    np.testing.assert_allclose(answers.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(answers - p).max() > 0.05
    # gamma >= 1 and beta * gamma < 1: the perturbed score is increasing, so no verdict can change
    np.testing.assert_array_equal(confident.argmax(axis=1), softmax_rows(2000, spread=10.0).argmax(axis=1))


def test_labels_only_gives_the_one_hot_row_of_each_verdict():
    p = softmax_rows(100)
    answers = answer_filter(LabelsOnly())(p)
    np.testing.assert_array_equal(answers.sum(axis=1), 1.0)
    np.testing.assert_array_equal(answers, np.eye(CLASSES, dtype=np.float32)[p.argmax(axis=1)])
    for row, answer in zip(p, answers):  # ART's ClassLabels is one-hot for a batch of one row
        np.testing.assert_array_equal(answer, ClassLabels()(row[None])[0])


def test_output_noise_is_reproducible_from_its_seed_and_fresh_on_every_call():
    p = softmax_rows(50)
    first, again, other = (answer_filter(OutputNoise(scale=0.1), seed) for seed in (7, 7, 8))
    calls = [first(p), first(p)]
    np.testing.assert_array_equal(calls[0], again(p))
    np.testing.assert_array_equal(calls[1], again(p))
    assert not np.allclose(calls[0], calls[1])
    assert not np.allclose(calls[0], other(p))
    np.testing.assert_allclose(calls[0].sum(axis=1), 1.0, atol=1e-5)


def test_output_noise_flips_verdicts_at_a_large_scale_only():
    p = softmax_rows(500, spread=3.0)
    undefended = p.argmax(axis=1)
    assert flip_rate(verdicts(answer_filter(OutputNoise(scale=0.5))(p)), undefended) > 0.2
    assert flip_rate(verdicts(answer_filter(OutputNoise(scale=1e-4))(p)), undefended) < 0.01


def test_output_noise_answers_a_row_whose_noisy_scores_are_all_negative():
    p = np.array([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]], np.float32)
    noise = np.array([[-1.0, -0.5, -0.9], [0.1, 0.0, 0.0]])
    answers = add_noise(p, noise)
    np.testing.assert_array_equal(answers[0], [0, 1, 0])  # -0.2 is the highest noisy score
    np.testing.assert_allclose(answers[1], [0.7, 0.3, 0.1] / np.float32(1.1), rtol=1e-6)


def test_output_noise_agrees_with_arts_gaussian_noise():
    p = softmax_rows(300)
    # the same draws: the clipping and renormalising are ART's
    np.random.seed(3)
    noise = np.random.normal(0.0, 0.1, size=p.shape)
    np.random.seed(3)
    reference = GaussianNoise(scale=0.1)(p)
    np.testing.assert_allclose(add_noise(p, noise), reference, rtol=1e-5, atol=1e-7)
    # gavel's own generator: the perturbation of one row has ART's mean and spread in every class
    rows = np.repeat(softmax_rows(1), 20000, axis=0)
    ours = answer_filter(OutputNoise(scale=0.1), seed=3)(rows) - rows
    np.random.seed(3)
    art = GaussianNoise(scale=0.1)(rows) - rows
    np.testing.assert_allclose(ours.mean(axis=0), art.mean(axis=0), atol=3e-3)
    np.testing.assert_allclose(ours.std(axis=0), art.std(axis=0), rtol=0.05)


@pytest.mark.parametrize("name", DEFENSES)
@pytest.mark.parametrize("output", [o.value for o in Output])
def test_check_refuses_the_outputs_a_defense_does_not_apply_to(name, output):
    cls, allowed = DEFENSES[name]
    policy = AccessPolicy(weights="hidden", output=output, budget=100)
    threat_model = DECISION_BASED if output == "label" else SCORE_BASED
    if output in allowed:
        cls().check(policy, threat_model, name)
        return
    with pytest.raises(ValueError) as refused:
        cls().check(policy, threat_model, name)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"access.output={output}: defense={name} ")
    assert message.endswith(f"allowed: {', '.join(allowed)}")


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Rounded(decimals=0), "defense.decimals=0: allowed: a positive integer"),
        (lambda: TopK(k=True), "defense.k=True: allowed: a positive integer"),
        (lambda: ReverseSigmoid(gamma=0.0), "defense.gamma=0.0: allowed: a number > 0"),
        (lambda: OutputNoise(scale=float("nan")), "defense.scale=nan: allowed: a number > 0"),
    ],
)
def test_a_defense_built_in_code_refuses_values_out_of_range(build, message):
    with pytest.raises(ValueError) as refused:
        build()
    assert str(refused.value) == message


@pytest.mark.parametrize("name", DEFENSES)
def test_each_yaml_builds_its_defense_with_every_hyperparameter_commented(name):
    cls, _ = DEFENSES[name]
    path = CONF / f"{name}.yaml"
    component = read_component(Node(OmegaConf.to_container(OmegaConf.load(path)), "defense"), "defense", Defense)
    assert component.name == name and type(component.instance) is cls
    assert set(component.params) == set(declared_hyperparameters(cls.__mro__))
    for line in path.read_text().splitlines():
        if line.split(":")[0] in component.params:
            assert "#" in line, f"{path.name}: no comment on {line!r}"


def test_the_config_boundary_names_the_key_out_of_range():
    values = dict(OmegaConf.to_container(OmegaConf.load(CONF / "rounded.yaml")), decimals=0)
    with pytest.raises(ConfigError, match=r"^defense\.decimals=0: allowed: a positive integer$"):
        read_component(Node(values, "defense"), "defense", Defense)


# --- the cost to honest users ------------------------------------------------------------------------------

ROWS = np.array(
    [
        [0.90, 0.05, 0.05],  # right, confidence 0.90
        [0.95, 0.03, 0.02],  # wrong, 0.95
        [0.20, 0.70, 0.10],  # right, 0.70
        [0.55, 0.45, 0.00],  # wrong, 0.55
        [0.42, 0.33, 0.25],  # right, 0.42
    ],
    np.float32,
)
LABELS = np.array([0, 1, 1, 1, 0])


def test_expected_calibration_error_by_hand():
    # 15 bins: every row alone in its bin, so the mean of |right - confidence|
    assert expected_calibration_error(ROWS, LABELS) == pytest.approx((0.10 + 0.95 + 0.30 + 0.55 + 0.58) / 5, abs=1e-6)
    # 2 bins: (0, 0.5] holds the last row; (0.5, 1] the rest, 2 of 4 right at mean confidence 0.775
    assert expected_calibration_error(ROWS, LABELS, bins=2) == pytest.approx(
        1 / 5 * 0.58 + 4 / 5 * abs(0.5 - 0.775), abs=1e-6
    )
    calibrated = np.array([[0.75, 0.25]] * 4, np.float32)
    assert expected_calibration_error(calibrated, np.array([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-7)


def test_expected_calibration_error_of_one_hot_answers_is_the_error_rate():
    p = softmax_rows(100)
    y = np.random.default_rng(1).integers(0, CLASSES, 100)
    answers = answer_filter(LabelsOnly())(p)
    assert expected_calibration_error(answers, y) == pytest.approx(1 - clean_accuracy(verdicts(answers), y))


def test_clean_accuracy_and_flip_rate_by_hand():
    assert verdicts(ROWS).tolist() == [0, 0, 1, 0, 0]
    assert clean_accuracy(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 0])) == 0.75
    assert flip_rate(np.array([0, 1, 2, 3]), np.array([0, 1, 1, 1])) == 0.5
    assert flip_rate(np.array([2, 2]), np.array([2, 2])) == 0.0


@pytest.mark.parametrize(
    "metric",
    [
        lambda: clean_accuracy(np.array([], int), np.array([], int)),
        lambda: flip_rate(np.array([0, 1]), np.array([0, 1, 2])),
        lambda: expected_calibration_error(ROWS, LABELS[:3]),
        lambda: expected_calibration_error(ROWS, LABELS, bins=0),
    ],
)
def test_a_metric_refuses_what_it_cannot_measure(metric):
    with pytest.raises(ValueError):
        metric()
