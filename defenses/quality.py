"""What a defense costs honest users, measured on the evaluation examples' answers (never assumed): the
accuracy of the defended verdicts, how many verdicts the defense changed, and how well the scores an honest
user receives are calibrated. A metric over no examples does not apply, so it raises rather than return 0."""

from __future__ import annotations

import numpy as np


def verdicts(answers: np.ndarray) -> np.ndarray:
    """The API's verdict for each row of answers [rows, classes]: the arg-max of what is returned."""
    return np.asarray(answers).argmax(axis=1)


def clean_accuracy(verdicts_defended: np.ndarray, y: np.ndarray) -> float:
    """The fraction of the defended verdicts that are the true labels."""
    verdicts_defended, y = _paired(verdicts_defended, y)
    return float(np.mean(verdicts_defended == y))


def flip_rate(verdicts_defended: np.ndarray, verdicts_undefended: np.ndarray) -> float:
    """The fraction of examples whose top-1 verdict the defense changed."""
    verdicts_defended, verdicts_undefended = _paired(verdicts_defended, verdicts_undefended)
    return float(np.mean(verdicts_defended != verdicts_undefended))


def expected_calibration_error(probabilities: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE (Guo et al., 2017): over `bins` equal-width bins of the confidence (the top score, bin i holding
    (i/bins, (i+1)/bins], a confidence of 0 the first), |accuracy - mean confidence| of each bin weighted by
    the fraction of rows in it. The scores are taken as returned: a defended row need not sum to 1."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities has shape {probabilities.shape}; allowed: [rows, classes]")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins={bins!r}: allowed: a positive integer")
    confidence = probabilities.max(axis=1)
    y, confidence = _paired(y, confidence)
    correct = probabilities.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.digitize(confidence, edges[1:-1], right=True)
    mass = np.bincount(which, minlength=bins)
    occupied = mass > 0
    accuracy = np.bincount(which, weights=correct, minlength=bins)[occupied] / mass[occupied]
    mean_confidence = np.bincount(which, weights=confidence, minlength=bins)[occupied] / mass[occupied]
    return float(np.sum(mass[occupied] / len(confidence) * np.abs(accuracy - mean_confidence)))


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"one value per example on both sides; got shapes {a.shape} and {b.shape}")
    if len(a) == 0:
        raise ValueError("no examples: the metric does not apply")
    return a, b
