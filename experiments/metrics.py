"""From the evaluator's re-check on the judge to the metrics every run logs.

A metric that does not apply is left out, never logged as 0: queries for an attack that sends none, time to
compromise without a query rate (the simulated clock stands still), costs without an account price, the mean
perturbation of successes when there are none. Rates carry their confidence interval (`_ci_low`, `_ci_high`:
`experiments.statistics`), as do the median of queries and the area under the success-vs-queries curve."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gavel.attacks.base import AttackResult, Goal, distances
from gavel.experiments.statistics import Interval, bootstrap_interval, rate_interval, success_auc
from gavel.targets.access import SHARED, Oracle, ThreatModel

PER_EXAMPLE_COLUMNS = (
    "index",
    "label",
    "initial_prediction",
    "final_prediction",
    "attacked",
    "success",
    "queries",
    "queries_to_success",
    "linf",
    "l2",
)


@dataclass(frozen=True)
class Evaluation:
    per_example: dict[str, np.ndarray]
    metrics: dict[str, float]
    success_curve: list[tuple[int, float]]
    """(query count, attack success rate within that many queries), for query attacks."""


@dataclass(frozen=True)
class Compromise:
    """What fooling each attacked example cost the attacker, from the Oracle's ledger."""

    hours: np.ndarray
    cost: np.ndarray
    queries_shared: int
    campaign_hours: float
    accounts_used: int
    account_cost: float
    rated: bool = False
    """Whether time means anything: the operator's policy sets a query rate (`access.rate`: only then does the
    simulated clock run), or the clock is the wall clock (a judge behind a real API)."""
    budget: int | None = None
    """Queries per example (`access.budget`), the end of the success-vs-queries axis; None when unlimited."""


def compromise_from_ledger(oracle: Oracle, result: AttackResult) -> Compromise:
    """Per example: hours (simulated, or on the wall clock) from its first query to the one that fooled the judge
    (its last query when the success was only seen on the re-check), and the price of the accounts those queries
    used."""
    hours, cost = [], []
    for i in range(len(result.x_adv)):
        k = result.queries_to_success[i] if result.queries_to_success[i] > 0 else result.queries[i]
        rows = oracle.rows(i)[:k]
        hours.append((rows[-1][2] - rows[0][1]) / 3600 if rows else 0.0)
        cost.append(oracle.policy.account_cost * len({account for account, _, _ in rows}))
    return Compromise(
        hours=np.array(hours),
        cost=np.array(cost),
        queries_shared=oracle.queries(SHARED),
        campaign_hours=max((entry.end for entry in oracle.ledger), default=0.0) / 3600,  # to the last answer
        accounts_used=oracle.accounts_used,
        account_cost=oracle.policy.account_cost,
        rated=oracle.policy.rate is not None or oracle.real_time,
        budget=oracle.policy.budget,
    )


def evaluate(
    *,
    index: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    initial: np.ndarray,
    attacked: np.ndarray,
    final_attacked: np.ndarray,
    result: AttackResult,
    goal: Goal,
    threat_model: ThreatModel,
    compromise: Compromise,
) -> Evaluation:
    """Metrics over the `len(y)` evaluation examples; the attack ran on the rows where `attacked` is true.

    `final_attacked` is the judge's label for each adversarial input, re-checked by the evaluator.
    """
    n_attacked = int(attacked.sum())
    if n_attacked != len(result.x_adv):
        raise ValueError(f"the attack returned {len(result.x_adv)} results for {n_attacked} attacked examples")
    x_attacked = x[attacked]
    flat = result.x_adv.reshape(n_attacked, -1)
    in_domain = (flat.min(axis=1) >= 0) & (flat.max(axis=1) <= 1)
    success_attacked = goal.fooled(final_attacked, y[attacked]) & goal.within(result.x_adv, x_attacked) & in_domain
    linf_attacked = distances(result.x_adv, x_attacked, "inf")
    l2_attacked = distances(result.x_adv, x_attacked, "2")

    def spread(values, dtype, fill=0):
        out = np.full(len(y), fill, dtype=dtype)
        out[attacked] = values
        return out

    final = initial.copy()
    final[attacked] = final_attacked
    success = spread(success_attacked, bool, False)
    queries = result.queries + compromise.queries_shared / n_attacked  # extraction spread over the examples
    total = int(result.queries.sum()) + compromise.queries_shared
    robust = (initial == y) & ~success
    metrics = {
        "clean_accuracy": float((initial == y).mean()),
        "robust_accuracy": float(robust.mean()),
        **_with_interval("robust_accuracy", rate_interval(int(robust.sum()), len(y))),
        "attack_success_rate": float(success_attacked.mean()),
        **_with_interval("attack_success_rate", rate_interval(int(success_attacked.sum()), n_attacked)),
        "n_examples": float(len(y)),
        "n_attacked": float(n_attacked),
    }
    if success_attacked.any():  # the mean size of no perturbation is undefined, not 0
        metrics["perturbation_linf_mean"] = float(linf_attacked[success_attacked].mean())
        metrics["perturbation_l2_mean"] = float(l2_attacked[success_attacked].mean())
    if threat_model.charged_queries or total > 0:  # an attack that sent no query has no query figures
        metrics |= _query_metrics(queries, total, success_attacked, result, compromise, threat_model.charged_queries)
    curve = success_curve(success_attacked, result) if threat_model.charged_queries else []
    per_example = {
        "index": index,
        "label": y,
        "initial_prediction": initial,
        "final_prediction": final,
        "attacked": attacked,
        "success": success,
        "queries": spread(result.queries, np.int64),
        "queries_to_success": spread(result.queries_to_success, np.int64, -1),  # -1: not seen fooled
        "linf": spread(linf_attacked, np.float64),
        "l2": spread(l2_attacked, np.float64),
    }
    return Evaluation(per_example, metrics, curve)


def _with_interval(name: str, interval: Interval) -> dict[str, float]:
    return {f"{name}_ci_low": interval.low, f"{name}_ci_high": interval.high}


def _query_metrics(
    queries: np.ndarray,
    total: int,
    success: np.ndarray,
    result: AttackResult,
    compromise: Compromise,
    charged: bool,
) -> dict[str, float]:
    """Queries spent, the area under the success-vs-queries curve (`charged`: an attack that spends a query
    budget on the examples, as its threat model says), and what the time and the accounts behind the successes
    cost where the policy gives them a clock and a price."""
    n = len(queries)
    metrics = {
        "queries_total": float(total),
        "queries_mean": float(total / n),
        "queries_median": float(np.median(queries)),
        **_with_interval("queries_median", bootstrap_interval(np.median, (queries,))),
        "queries_shared": float(compromise.queries_shared),
        "budget_exhausted_fraction": float(result.budget_exhausted.mean()),
        "accounts_used": float(compromise.accounts_used),
    }
    spent = np.where(result.queries_to_success > 0, result.queries_to_success, result.queries)
    most = compromise.budget if compromise.budget is not None else int(result.queries.max(initial=0))
    if charged and most >= 2:
        area = lambda s, q: success_auc(s, q, most)  # noqa: E731
        metrics["success_auc"] = area(success, spent)
        metrics |= _with_interval("success_auc", bootstrap_interval(area, (success, spent)))
    if compromise.rated:
        metrics["campaign_hours"] = float(compromise.campaign_hours)
        if success.any():
            metrics["time_to_compromise_hours_median"] = float(np.median(compromise.hours[success]))
    if compromise.account_cost > 0:
        metrics["campaign_cost"] = float(compromise.accounts_used * compromise.account_cost)
        if success.any():
            metrics["cost_to_compromise_median"] = float(np.median(compromise.cost[success]))
    return metrics


def success_curve(success: np.ndarray, result: AttackResult) -> list[tuple[int, float]]:
    """Success rate within q queries, at q = 1, 2, 5, 10, 20, 50, ... up to the most any example spent.

    An example counts from the query at which the attacker first saw the judge fooled; one that succeeded
    without the attacker seeing it (the evaluator's re-check of its final input) counts from its last query.
    """
    spent = np.where(result.queries_to_success > 0, result.queries_to_success, result.queries)
    most = int(result.queries.max(initial=0))
    steps = sorted(set(_one_two_five(most)) | {most}) if most > 0 else []
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
