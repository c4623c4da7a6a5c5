"""What the operator's defense cost and caught, measured beside the attack's numbers in every run.

- the cost to honest users of what the API returns: `flip_rate` (top-1 verdicts that differ from the undefended
  judge's) and `calibration_error` (ECE of the probabilities the API serves) on the evaluation examples; the
  defended `clean_accuracy` is the evaluator's;
- with a detector: what it caught in the attack's traffic (`detection_rate`, `queries_to_detection_median`,
  `detections_total`, `rejected_query_fraction`), and what it costs honest accounts, counted on a benign stream
  (`false_positive_rate` per query, `false_positive_rate_accounts` per honest account), with its ROC.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure

from gavel.attacks.base import AttackResult
from gavel.defenses.benign import BenignStreamSpec, benign_stream, false_positive_rates
from gavel.defenses.quality import expected_calibration_error, flip_rate
from gavel.defenses.roc import auc, operating_point, roc_figure, roc_points
from gavel.targets.access import Oracle, Shield
from gavel.targets.datasets import Dataset
from gavel.targets.training import predict_labels


@dataclass(frozen=True)
class OperatorReport:
    metrics: dict[str, float]
    figures: dict[str, Figure] = field(default_factory=dict)
    """Artifact name -> figure."""


def honest_cost(
    oracle: Oracle, judge, x: np.ndarray, y: np.ndarray, verdicts: np.ndarray, device: str
) -> dict[str, float]:
    """Flip rate against the undefended judge of the API's `verdicts` on the examples `x` (the ones clean
    accuracy is measured on: one draw of a randomised defense, not another), and ECE of the served
    probabilities."""
    undefended = predict_labels(judge, x, device=device)
    return {
        "flip_rate": flip_rate(verdicts, undefended),
        "calibration_error": expected_calibration_error(oracle.served_probabilities(x), y),
    }


def detection_metrics(oracle: Oracle, result: AttackResult) -> dict[str, float]:
    """What the detector caught in the attack's traffic, from the Oracle's ledger and the attack's own record.

    The attack on an example was detected when one of its queries was flagged, or when it ended unfooled, with
    budget left, because every account the attacker held had been banned (rows refused by a ban and answered
    on the attacker's next account do not count). Its queries to detection are those charged to it up to the
    flag, or in all when bans ended it. `rejected_query_fraction` is the share of the rows the Oracle received
    that it refused because of the detector (flagged, or from a banned account); a refused row asked again is
    received again."""
    n_attacked = len(result.queries)
    charged: dict = {}
    received = refused = 0
    for entry in oracle.ledger:
        received += entry.requested
        refused += entry.rejected + entry.banned
        charged[entry.example] = charged.get(entry.example, 0) + entry.evaluated + entry.rejected
    flagged_at: dict = {}
    for detection in oracle.detections:  # in order: an example's first flag, at its charge with the flagged row
        flagged_at.setdefault(detection.example, detection.query)
    banned_out = len(oracle.banned) >= oracle.policy.accounts
    budget = oracle.policy.budget
    detected = []
    for example in range(n_attacked):
        unfooled_with_budget_left = result.queries_to_success[example] < 0 and (
            budget is None or result.queries[example] < budget
        )
        if example in flagged_at:
            detected.append(flagged_at[example])
        elif banned_out and unfooled_with_budget_left:
            detected.append(charged.get(example, 0))
    metrics = {
        "detection_rate": len(detected) / n_attacked,
        "detections_total": float(len(oracle.detections)),  # flagged queries: each bans one account, unless reject
    }
    if received:
        metrics["rejected_query_fraction"] = refused / received
    if detected:  # left out when nothing was detected: a median of no detections is not 0
        metrics["queries_to_detection_median"] = float(np.median(detected))
    return metrics


def benign_pool(data: Dataset, n_examples: int) -> np.ndarray:
    """Held-out honest inputs: the data's own honest pool (the half of the user's `data.operator` that set no
    threshold), else the evaluation pool past the examples used, then the attacker's pool. None of them trained the
    judge or set a detector's threshold."""
    if data.honest is not None:
        return data.honest.x
    return np.concatenate([data.eval.x[n_examples:], data.attacker.x])


def measure(
    oracle: Oracle,
    shield: Shield,
    judge,
    data: Dataset,
    x: np.ndarray,
    y: np.ndarray,
    verdicts: np.ndarray,
    result: AttackResult,
    n_examples: int,
    benign: BenignStreamSpec,
    device: str,
) -> OperatorReport:
    metrics = honest_cost(oracle, judge, x, y, verdicts, device)
    figures: dict[str, Figure] = {}
    detector = shield.detector
    if detector is not None:
        metrics.update(detection_metrics(oracle, result))
        report = false_positive_rates(detector, benign_stream(benign_pool(data, n_examples), benign))
        metrics["false_positive_rate"] = report.per_query
        metrics["false_positive_rate_accounts"] = report.per_account
        metrics["benign_queries"] = float(report.queries_sent)
        attack_scores = np.concatenate(oracle.screened_scores) if oracle.screened_scores else np.zeros(0)
        if len(attack_scores):
            fpr, tpr, _ = roc_points(report.scores, attack_scores)
            metrics["detector_auc"] = auc(fpr, tpr)
            point = operating_point(report.scores, attack_scores, detector.threshold)
            figures["detector_roc.png"] = roc_figure({"detector": (fpr, tpr)}, {"detector": point})
    return OperatorReport(metrics, figures)
