"""From the evaluator's re-check on the judge to the metrics every run logs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attacks.base import AttackResult

LINF_TOLERANCE = 1e-6
QUERY_THREAT_MODELS = ("score_based", "decision_based")
PER_EXAMPLE_COLUMNS = (
    "index", "label", "initial_prediction", "final_prediction", "attacked", "success", "queries", "linf",
)


@dataclass(frozen=True)
class Evaluation:
    per_example: dict[str, np.ndarray]
    metrics: dict[str, float]
    success_curve: list[tuple[int, float]]
    """(query count, attack success rate within that many queries), for query attacks."""


def evaluate(
    *,
    index: np.ndarray,
    y: np.ndarray,
    initial: np.ndarray,
    final_attacked: np.ndarray,
    x_attacked: np.ndarray,
    result: AttackResult,
    eps: float,
    threat_model: str,
) -> Evaluation:
    """Metrics over the `len(y)` evaluation examples; the attack ran on those the judge got right.

    `final_attacked` is the judge's label for each adversarial input, re-checked by the evaluator.
    """
    attacked = initial == y
    n_attacked = int(attacked.sum())
    if n_attacked != len(result.x_adv):
        raise ValueError(f"the attack returned {len(result.x_adv)} results for {n_attacked} attacked examples")
    linf_attacked = np.abs(result.x_adv - x_attacked).reshape(n_attacked, -1).max(axis=1)
    in_domain = (result.x_adv.reshape(n_attacked, -1).min(axis=1) >= 0) & (
        result.x_adv.reshape(n_attacked, -1).max(axis=1) <= 1
    )
    success_attacked = (final_attacked != y[attacked]) & (linf_attacked <= eps + LINF_TOLERANCE) & in_domain

    final = initial.copy()
    final[attacked] = final_attacked
    success = np.zeros(len(y), dtype=bool)
    success[attacked] = success_attacked
    queries = np.zeros(len(y), dtype=np.int64)
    queries[attacked] = result.queries
    linf = np.zeros(len(y), dtype=np.float64)
    linf[attacked] = linf_attacked

    q = result.queries
    metrics = {
        "clean_accuracy": float(attacked.mean()),
        "robust_accuracy": float((attacked & ~success).mean()),
        "attack_success_rate": float(success_attacked.mean()),
        "queries_total": float(q.sum()),
        "queries_mean": float(q.mean()),
        "queries_median": float(np.median(q)),
        "perturbation_linf_mean": float(linf_attacked[success_attacked].mean()) if success_attacked.any() else float("nan"),
        "budget_exhausted_fraction": float(result.budget_exhausted.mean()),
        "n_examples": float(len(y)),
        "n_attacked": float(n_attacked),
    }
    curve = success_curve(success_attacked, result) if threat_model in QUERY_THREAT_MODELS else []
    per_example = {
        "index": index,
        "label": y,
        "initial_prediction": initial,
        "final_prediction": final,
        "attacked": attacked,
        "success": success,
        "queries": queries,
        "linf": linf,
    }
    return Evaluation(per_example, metrics, curve)


def success_curve(success: np.ndarray, result: AttackResult) -> list[tuple[int, float]]:
    """Success rate within q queries, at q = 1, 2, 5, 10, 20, 50, ... up to the most any example spent.

    An example counts from the query at which the attacker first saw the judge fooled; one that succeeded
    without the attacker seeing it (the evaluator's re-check of its final input) counts from its last query.
    """
    spent = np.where(result.queries_to_success > 0, result.queries_to_success, result.queries)
    most = int(result.queries.max(initial=0))
    steps = sorted({s for s in _one_two_five(most)} | {most}) if most > 0 else []
    return [(s, float((success & (spent <= s)).mean())) for s in steps]


def _one_two_five(limit: int):
    decade = 1
    while decade <= limit:
        for m in (1, 2, 5):
            if m * decade <= limit:
                yield m * decade
        decade *= 10


def per_example_csv(per_example: dict[str, np.ndarray]) -> str:
    lines = [",".join(PER_EXAMPLE_COLUMNS)]
    for row in zip(*(per_example[c] for c in PER_EXAMPLE_COLUMNS)):
        lines.append(",".join(_cell(v) for v in row))
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (float, np.floating)):
        return f"{value:.6g}"
    return str(value)
