"""Read a sweep's runs back from MLflow and lay them out as a table."""
from __future__ import annotations

import math

import mlflow

THREAT_ORDER = {"white_box": 0, "transfer": 1, "score_based": 2, "decision_based": 3}
COLUMNS = (
    ("threat model", "threat_model"),
    ("output", "output"),
    ("budget", "budget"),
    ("attack", "attack"),
    ("success rate", "attack_success_rate"),
    ("median queries", "queries_median"),
    ("robust acc", "robust_accuracy"),
    ("clean acc", "clean_accuracy"),
    ("attacked", "n_attacked"),
)


def sweep_rows(experiment_name: str, sweep_id: str) -> list[dict]:
    runs = mlflow.search_runs(
        experiment_names=[experiment_name], filter_string=f"tags.sweep_id = '{sweep_id}'", output_format="list"
    )
    rows = []
    for run in runs:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        rows.append(
            {
                "run_id": run.info.run_id,
                "status": run.info.status,
                "threat_model": tags.get("threat_model", "?"),
                "attack": tags.get("attack", "?"),
                "output": tags.get("access.output", "?"),
                "weights": tags.get("access.weights", "?"),
                "budget": params.get("access.budget", "null"),
                **metrics,
            }
        )
    return sorted(rows, key=_order)


def format_table(rows: list[dict]) -> str:
    cells = [[header for header, _ in COLUMNS]] + [[_cell(row, key) for _, key in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _order(row: dict):
    budget = row["budget"]
    return (THREAT_ORDER.get(row["threat_model"], 9), row["attack"], math.inf if budget == "null" else int(budget))


def _cell(row: dict, key: str) -> str:
    value = row.get(key)
    if key == "budget":
        return "-" if row["threat_model"] in ("white_box", "transfer") else ("unlimited" if value == "null" else value)
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.0f}" if key in ("queries_median", "n_attacked") else f"{value:.3f}"
    return str(value)
