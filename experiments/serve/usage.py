"""`gavel keys usage`: the ledger per key and per device as a table (quota, window, rate, used in the current
window, requests, rows answered, rejected by the detector, refused, requests refused as malformed or unsigned,
banned), and the same logged to MLflow as one run's table and metrics."""

from __future__ import annotations

import time

from gavel.experiments.serve.store import Usage

COLUMNS = ("name", "kind", "quota", "window_h", "rate", "used", "requests", "answered", "rejected", "refused", "errors",
           "banned")  # fmt: skip
KEY_COLUMNS = ("name", "kind", "quota", "window_h", "rate", "banned")
"""What `gavel keys list` shows: the keys and their limits, without the ledger."""


def rows(usages: list[Usage], now: float) -> list[dict]:
    """One row per key and device; `used` counts the current window only (0 once it has ended)."""
    out = []
    for usage in usages:
        key = usage.key
        current = usage.window_start is not None and now - usage.window_start < key.window_hours * 3600
        out.append({
            "name": key.name,
            "kind": key.kind + (" (revoked)" if key.revoked_at is not None else ""),
            "quota": key.quota,
            "window_h": key.window_hours,
            "rate": "-" if key.rate is None else key.rate,
            "used": usage.window_used if current else 0,
            "requests": usage.requests,
            "answered": usage.answered,
            "rejected": usage.rejected,
            "refused": usage.refused,
            "errors": usage.errors,
            "banned": f"yes: {key.banned_why}" if key.banned else "no",
        })  # fmt: skip
    return out


def table(table_rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> str:
    cells = [list(columns)] + [[_cell(row[column]) for column in columns] for row in table_rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells)


def _cell(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def log_to_mlflow(experiment: str, table_rows: list[dict], unauthenticated: dict[str, int], store: str) -> str:
    """One run in `experiment`: the table (`serve_usage.json`), per-key metrics `<name>.answered` etc., and the
    totals; ended FINISHED (FAILED if logging fails). Returns the run's id."""
    import mlflow

    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"serve-usage-{time.strftime('%Y%m%d-%H%M%S')}") as run:
        mlflow.set_tags({"gavel.kind": "serve_usage", "serve.store": store})
        mlflow.log_table({column: [_cell(row[column]) for row in table_rows] for column in COLUMNS},
                         "serve_usage.json")  # fmt: skip
        metrics = {}
        for row in table_rows:
            for column in ("used", "requests", "answered", "rejected", "refused", "errors"):
                metrics[f"{row['name']}.{column}"] = float(row[column])
        for column in ("answered", "rejected", "refused", "errors"):
            metrics[f"{column}_total"] = float(sum(row[column] for row in table_rows if row["kind"].startswith("key")))
        metrics["unauthenticated_total"] = float(sum(unauthenticated.values()))
        mlflow.log_metrics(metrics)
        return run.info.run_id
