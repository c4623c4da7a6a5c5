"""Read a sweep's runs back from MLflow and lay them out as a table."""

from __future__ import annotations

import math

import mlflow

from gavel.experiments.statistics import pooled_rate
from gavel.experiments.tracking import recorded_overrides
from gavel.targets.access import THREAT_MODELS, threat_model_named

THREAT_ORDER = {model.name: position for position, model in enumerate(THREAT_MODELS)}
LEADING = (
    ("threat model", "threat_model"),
    ("attack", "attack"),
    ("eps", "eps"),
    ("output", "output"),
    ("budget", "budget"),
)
TRAILING = (
    ("success rate", "attack_success_rate"),
    ("95% interval", "attack_success_rate_ci"),
    ("median queries", "queries_median"),
    ("robust acc", "robust_accuracy"),
    ("clean acc", "clean_accuracy"),
    ("attacked", "n_attacked"),
)
DEFENDED = (
    ("flip rate", "flip_rate"),
    ("ECE", "calibration_error"),
)
DETECTED = (
    ("detected", "detection_rate"),
    ("q to detect", "queries_to_detection_median"),
    ("flags", "detections_total"),
    ("FP/query", "false_positive_rate"),
    ("FP/account", "false_positive_rate_accounts"),
)
"""Shown when a sweep has a defense: its cost to honest users; with a detector, what it caught and its false
positives on the benign stream."""
# Overrides the leading columns already show, or that name the sweep rather than vary within it.
SHOWN_ELSEWHERE = {
    "attack",
    "attack.eps",
    "access",
    "access.budget",
    "access.output",
    "defense",
    "experiment",
    "experiment_name",
    "run_label",
    "resume",  # a resumed sweep's new runs carry it, the runs it adopted do not
    "threads",  # set per job by the launcher's sharing of the cores; not a result's cause
}
COUNTS = {"queries_median", "n_attacked", "queries_to_detection_median", "detections_total", "seeds"}


def run_overrides(tags: dict) -> dict[str, str]:
    """A run's Hydra overrides (`recorded_overrides`, "key=value" each) as {key: value}, in their order, a leading
    + (Hydra's "add this key") dropped from each key."""
    words = (override.split("=", 1) for override in recorded_overrides(tags) if "=" in override)
    return {key.lstrip("+"): value for key, value in words}


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
                "name": run.info.run_name,
                "status": run.info.status,
                "start_time": run.info.start_time or 0,
                "tags": tags,
                "params": params,
                "threat_model": tags.get("threat_model", "?"),
                "attack": tags.get("attack", "?"),
                "defense": tags.get("defense", "none"),
                "output": tags.get("access.output", "?"),
                "budget": params.get("access.budget", "null"),
                "eps": _eps(tags.get("norm"), params.get("attack.eps")),
                "overrides": run_overrides(tags),
                **metrics,
            }
        )
    return sorted(rows, key=_order)


def varying_overrides(rows: list[dict]) -> list[str]:
    """Override keys whose value differs between the sweep's runs (beyond those the table always shows)."""
    keys = sorted({k for row in rows for k in row["overrides"] if "@" not in k} - SHOWN_ELSEWHERE)  # @: a stack's
    # members at their packages (`+defense@defense.jpeg=jpeg`), named in the defense column
    return [k for k in keys if len({row["overrides"].get(k) for row in rows}) > 1]


POOLED_RATES = (("attack_success_rate", "n_attacked"), ("robust_accuracy", "n_examples"))


def pool_seeds(rows: list[dict]) -> list[dict]:
    """Runs that differ only in their seed, as one row: rates pooled over the seeds' examples (successes over
    examples, with the pooled interval), other figures averaged, `seeds` the number pooled. Rows as they are when
    no seed varies."""
    if "seed" not in varying_overrides(rows):
        return rows
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        rest = tuple(sorted((k, v) for k, v in row["overrides"].items() if k not in ("seed", "run_label")))
        key = (row["threat_model"], row["attack"], row["defense"], row["output"], row["budget"], row["eps"], rest)
        groups.setdefault(key, []).append(row)
    pooled = []
    for group in groups.values():
        row = {**group[0], "overrides": {k: v for k, v in group[0]["overrides"].items() if k != "seed"}}
        row["seeds"] = float(len(group))
        numeric = {k for member in group for k, v in member.items() if isinstance(v, float)}
        for key in {k for k in numeric if k.endswith(("_ci_low", "_ci_high"))}:
            row.pop(key, None)  # an average of bounds is no interval: only the pooled rates get theirs back
        for key in {k for k in numeric if not k.endswith(("_ci_low", "_ci_high"))} - {"seeds"}:
            values = [member[key] for member in group if key in member]
            row[key] = sum(values) / len(values) if len(values) == len(group) else None
        for rate, count in POOLED_RATES:
            if all(rate in member and count in member for member in group):
                value, _, total, interval = pooled_rate([(member[rate], member[count]) for member in group])
                row.update({rate: value, count: float(total)})
                row.update({f"{rate}_ci_low": interval.low, f"{rate}_ci_high": interval.high})
        if any(member["status"] != "FINISHED" for member in group):
            row["status"] = "INCOMPLETE"
        pooled.append(row)
    return sorted(pooled, key=_order)


def format_table(rows: list[dict]) -> str:
    rows = sorted(pool_seeds(rows), key=_order)
    extra = varying_overrides(rows)
    defended = any(row["defense"] != "none" for row in rows)
    leading = LEADING + ((("defense", "defense"),) if defended else ())
    trailing = TRAILING + ((("seeds", "seeds"),) if any("seeds" in row for row in rows) else ())
    trailing += DEFENDED if defended else ()
    trailing += DETECTED if any("detection_rate" in row for row in rows) else ()
    headers = [h for h, _ in leading] + extra + [h for h, _ in trailing]
    body = [
        [_cell(row, key) for _, key in leading]
        + [row["overrides"].get(key, "-") for key in extra]
        + [_cell(row, key) for _, key in trailing]
        for row in rows
    ]
    return aligned([headers, *body])


def aligned(rows: list[list[str]]) -> str:
    """Rows of cells as a plain-text table: columns padded to their widest cell, a rule under the header row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _order(row: dict):
    budget = row["budget"]
    return (
        THREAT_ORDER.get(row["threat_model"], 9),
        row.get("union", False),  # a threat model's unions after its attacks' own rows (`reports/union.py`)
        row["attack"],
        math.inf if budget == "null" else int(budget),
        (row["defense"] != "none", row["defense"]),  # the undefended baseline first
        [(key, _numeric_first(value)) for key, value in sorted(row["overrides"].items())],
    )


def _numeric_first(value: str) -> tuple:
    """Sort 300 before 1000, and numbers before words."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _eps(norm: str | None, eps: str | None) -> str:
    """The threat model's bound, e.g. "Linf 0.1" or "L2 1.0"; a patch is bounded by its size instead, and a backdoor by
    its trigger."""
    if norm in ("patch", "trigger"):
        return norm
    return f"{norm} {eps}" if norm and eps else "?"


def _cell(row: dict, key: str) -> str:
    if key.endswith("_ci"):  # a confidence interval, from the run's _ci_low and _ci_high metrics
        low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
        return "n/a" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"
    value = row.get(key)
    if key == "budget":
        if row["threat_model"] not in THREAT_ORDER or not threat_model_named(row["threat_model"]).charged_queries:
            return "-"
        return "unlimited" if value == "null" else value
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.0f}" if key in COUNTS else f"{value:.3f}"
    return str(value)
