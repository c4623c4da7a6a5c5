"""At the end of a sweep: print the table of its runs and where they are, and write it beside the sweep."""

from __future__ import annotations

from pathlib import Path

import mlflow
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from experiments.tracking import sweep_id_for
from reports.curves import plot_curves
from reports.table import format_table, sweep_rows


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_id = sweep_id_for(sweep_dir)
        rows = sweep_rows(config.experiment_name, sweep_id)
        if not rows:
            return
        table = format_table(rows)
        uri = mlflow.get_tracking_uri()
        where = (
            f"MLflow: {len(rows)} runs in experiment '{config.experiment_name}' (tag sweep_id={sweep_id}) at {uri}\n"
            f"        browse them with: mlflow ui --backend-store-uri {uri}"
        )
        curves = plot_curves(rows, sweep_dir)
        if curves:
            where += "\n" + "\n".join(f"Success-vs-queries curves: {path}" for path in curves)
        print(f"\n{table}\n\n{where}\n")
        (sweep_dir / "summary.md").write_text(f"# {config.experiment_name}\n\n```\n{table}\n```\n\n{where}\n")
