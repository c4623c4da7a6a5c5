"""At the end of a sweep: print the table of its runs (and, where a row was attacked several ways, the union of its
attacks: `reports/union.py`) and where they are, write it beside the sweep, and record
the sweep in MLflow as a parent run: its description is the table, its artifacts the summary and the curves,
and every job's run is linked to it as a child (MLflow's `mlflow.parentRunId` tag), so the UI nests them."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gavel.experiments.tracking import NOTE, runs_page, sweep_id_for, use_experiment
from gavel.reports import checks
from gavel.reports.curves import plot_curves
from gavel.reports.table import format_table, sweep_rows
from gavel.reports.union import load_per_example, union_rows


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_id = sweep_id_for(sweep_dir)
        rows = sweep_rows(config.experiment_name, sweep_id)
        if not rows:
            return
        records = collect_runs(config.experiment_name, sweep_id)  # each run's per-example table read once, for both
        loaded = {r.run_id: r.per_example for r in records if r.per_example is not None}
        unions, notes = union_rows(rows, lambda run_id: loaded.get(run_id) or load_per_example(run_id))
        warned, compared, crossed = sweep_checks(records)
        table = format_table(rows + unions) + note_lines(notes) + refused_lines(sweep_dir) + warned
        uri = mlflow.get_tracking_uri()
        where = (
            f"MLflow: {len(rows)} runs in experiment '{config.experiment_name}' (tag sweep_id={sweep_id}) at {uri}\n"
            f"        browse them with: mlflow ui --backend-store-uri {uri}, "
            f"then {runs_page(config.experiment_name)}"
        )
        curves = plot_curves(rows, sweep_dir)
        if curves:
            where += "\n" + "\n".join(f"Success-vs-queries curves: {path}" for path in curves)
        print(f"\n{table}\n\n{where}\n")
        summary = sweep_dir / "summary.md"
        summary.write_text(f"# {config.experiment_name}\n\n```\n{table}\n```\n\n{where}\n")
        parent_id = record_parent_run(config.experiment_name, sweep_id, rows, table, [summary, *curves])
        if compared:  # the check that needs two runs is the sweep's: its verdict on the parent run
            mlflow.MlflowClient().set_tag(parent_id, f"{checks.CHECK_TAG}{checks.BEATS}", "warn" if crossed else "pass")


def collect_runs(experiment: str, sweep_id: str) -> list:
    """The sweep's runs as the report reads them (`reports.report.collect`)."""
    from gavel.reports.report import collect  # it reads this module's parent-run helpers

    return collect(experiment, sweep_id)


def sweep_checks(records: list) -> tuple[str, int, bool]:
    """The sweep's sanity warnings, a line each under its table (each run's own, and a black box beating the white
    box on the same examples); how many white-box against black-box pairs were compared, and whether one warned."""
    crossed, compared = checks.black_box_beats_white_box(records)
    found = checks.warnings(records) + crossed
    lines = [f"sanity check warns: {f.run}: {f.check.replace('_', ' ')}" for f in found]
    return ("\n\n" + "\n".join(lines) if lines else ""), compared, bool(crossed)


def note_lines(notes: list[str]) -> str:
    """What the table's unions say of themselves (a row not united, examples left out), a line each under it."""
    return "\n\n" + "\n".join(notes) if notes else ""


def refused_lines(sweep_dir: Path) -> str:
    """The sweep's jobs the judge or the data could not serve (the sweeper's `refused.json`), a line each under the
    table."""
    path = sweep_dir / "refused.json"
    refused = json.loads(path.read_text()) if path.is_file() else []
    if not refused:
        return ""
    return "\n\n" + "\n".join(f"not run: {item['job'].split(' run_label=')[0]}: {item['why']}" for item in refused)


SWEEP_PARENT = "sweep_parent_of"
"""The tag that marks a sweep's parent run (its value: the sweep id); the jobs' runs carry `sweep_id`."""


def sweep_parents(experiment: str, sweep_id: str) -> list:
    """The parent run of sweep `sweep_id` (a list: empty before the sweep's summary recorded it)."""
    return mlflow.search_runs(
        experiment_names=[experiment], filter_string=f"tags.{SWEEP_PARENT} = '{sweep_id}'", output_format="list"
    )


def record_parent_run(experiment: str, sweep_id: str, rows: list[dict], table: str, artifacts: list[Path]) -> str:
    """The sweep's parent run (one per sweep: a re-run summary replaces nothing, it finds the same one)."""
    use_experiment(experiment)
    client = mlflow.MlflowClient()
    found = sweep_parents(experiment, sweep_id)
    note = f"Sweep {sweep_id}: {len(rows)} runs.\n\n```\n{table}\n```"
    tags = {SWEEP_PARENT: sweep_id, NOTE: note}
    if found:
        parent_id = found[0].info.run_id
        for key, value in tags.items():
            client.set_tag(parent_id, key, value)
    else:
        with mlflow.start_run(run_name=f"sweep {sweep_id} ({len(rows)} runs)", tags=tags) as parent:
            parent_id = parent.info.run_id
    for path in artifacts:
        client.log_artifact(parent_id, str(path))
    for row in rows:
        client.set_tag(row["run_id"], "mlflow.parentRunId", parent_id)
    return parent_id
