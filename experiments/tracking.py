"""MLflow conventions: one run per Hydra job, named and tagged so dashboards and reports can find it.

Tracking URI: MLFLOW_TRACKING_URI if set, else MLflow's own default. A run that raises ends FAILED.
"""
from __future__ import annotations

import hashlib
import subprocess
from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
from omegaconf import DictConfig, OmegaConf

REPO_DIR = Path(__file__).resolve().parent.parent


def run_name(threat_model: str, cfg: DictConfig) -> str:
    budget = "inf" if cfg.access.budget is None else cfg.access.budget
    return f"{threat_model}-{cfg.attack.name}-{cfg.target.name}-b{budget}-s{cfg.seed}"


def sweep_id_for(sweep_dir: str | Path) -> str:
    """One id per multirun sweep, the same in every job of it and in the sweep's end-of-run callback."""
    return hashlib.sha256(str(Path(sweep_dir).resolve()).encode()).hexdigest()[:12]


def flatten(node, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = "null" if value is None else str(value)
    return flat


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextmanager
def mlflow_run(cfg: DictConfig, attack, sweep_id: str | None = None, overrides: list[str] = ()):
    """Start the run with its params and tags; on any exception the run ends FAILED (KILLED on Ctrl-C)."""
    mlflow.set_experiment(cfg.experiment_name)
    tags = {
        "threat_model": attack.threat_model,
        "norm": "patch" if attack.norm is None else f"L{attack.norm}",
        "attack": cfg.attack.name,
        "judge": cfg.target.name,
        "dataset": cfg.data.name,
        "access.output": cfg.access.output,
        "access.weights": cfg.access.weights,
        "defense": cfg.defense.name,
        "git_sha": git_sha(),
    }
    if sweep_id is not None:
        tags["sweep_id"] = sweep_id
    if overrides:
        tags["overrides"] = " ".join(overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    with mlflow.start_run(run_name=run_name(attack.threat_model, cfg), tags=tags) as run:
        mlflow.log_params(flatten(resolved))
        mlflow.log_text(OmegaConf.to_yaml(resolved), "config.yaml")
        yield run


def log_evaluation(evaluation, per_example_csv: str, figure) -> None:
    mlflow.log_metrics(evaluation.metrics)
    for step, rate in evaluation.success_curve:
        mlflow.log_metric("attack_success_rate_at_queries", rate, step=step)
    mlflow.log_text(per_example_csv, "per_example.csv")
    mlflow.log_figure(figure, "adversarial_grid.png")
    plt.close(figure)
