"""A detector's ROC: honest users flagged against attack queries caught, its threshold swept.

The convention is the Detector's: a query is flagged when its score reaches the threshold (`score >= t`), and
higher scores are more suspicious. Scores may be infinite (a detector may score an exact repeat +inf, or a first
query with no history -inf), which is why the sweep is computed here rather than by sklearn, which refuses them.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _scores(values, name: str) -> np.ndarray:
    scores = np.asarray(values, dtype=np.float64).ravel()
    if not len(scores):
        raise ValueError(f"roc: {name} is empty, so no rate over it exists")
    if np.isnan(scores).any():
        raise ValueError(f"roc: {name} contains NaN, which no threshold flags or passes consistently")
    return scores


def _flagged_fraction(sorted_scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    below = np.searchsorted(sorted_scores, thresholds, side="left")
    return (len(sorted_scores) - below) / len(sorted_scores)


def roc_points(benign_scores, attack_scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), thresholds decreasing over every distinct score: at `thresholds[i]`, `fpr[i]` of
    the benign and `tpr[i]` of the attack queries score `>= thresholds[i]`. As in sklearn, the first point is
    (0, 0), "flag nothing", with threshold +inf standing for "above every score"."""
    benign, attack = _scores(benign_scores, "benign_scores"), _scores(attack_scores, "attack_scores")
    thresholds = np.unique(np.concatenate([benign, attack]))[::-1]
    fpr = _flagged_fraction(np.sort(benign), thresholds)
    tpr = _flagged_fraction(np.sort(attack), thresholds)
    return np.r_[0.0, fpr], np.r_[0.0, tpr], np.r_[np.inf, thresholds]


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the curve through the points (trapezoids: tied scores count half, as a coin flip would)."""
    return float(np.trapezoid(tpr, fpr))


def operating_point(benign_scores, attack_scores, threshold: float) -> tuple[float, float]:
    """(fpr, tpr) of a detector at its configured threshold, without bans."""
    benign, attack = _scores(benign_scores, "benign_scores"), _scores(attack_scores, "attack_scores")
    return float(np.mean(benign >= threshold)), float(np.mean(attack >= threshold))


def roc_figure(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    operating_points: dict[str, tuple[float, float]] | None = None,
) -> Figure:
    """One ROC per detector, with a marker where each one's configured threshold puts it.

    The false-positive axis is logarithmic down to the smallest positive rate shown and linear below it: the
    rates that matter to honest users are small, and a log axis alone could not show a rate of 0."""
    operating_points = operating_points or {}
    names = list(dict.fromkeys([*curves, *operating_points]))
    colours = {name: plt.cm.tab10(i % 10) for i, name in enumerate(names)}
    shown = [np.asarray(fpr, dtype=np.float64) for fpr, _ in curves.values()]
    shown.append(np.array([fpr for fpr, _ in operating_points.values()], dtype=np.float64))
    positive = np.concatenate(shown)
    positive = positive[positive > 0]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (fpr, tpr) in curves.items():
        label = f"{name} (AUC {auc(np.asarray(fpr), np.asarray(tpr)):.3f})"
        ax.plot(fpr, tpr, color=colours[name], label=label)
    for name, (fpr, tpr) in operating_points.items():
        ax.plot([fpr], [tpr], marker="o", linestyle="none", color=colours[name], markeredgecolor="black")
    floor = positive.min() if len(positive) else 1e-3  # no positive rate: any small scale shows the zeros
    chance = np.geomspace(floor, 1, 50)
    ax.plot(np.r_[0, chance], np.r_[0, chance], color="grey", linestyle=":", label="chance")
    ax.set_xscale("symlog", linthresh=floor, linscale=0.5)
    ax.set_xticks([0, *10.0 ** np.arange(np.ceil(np.log10(floor)), 1)])  # decades below the floor crowd 0
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false-positive rate (honest queries flagged)")
    ax.set_ylabel("true-positive rate (attack queries flagged)")
    ax.set_title("detector ROC; dots: configured threshold")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
