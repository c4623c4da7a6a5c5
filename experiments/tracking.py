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
import mlflow.data
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf

from experiments.settings import RunSettings

REPO_DIR = Path(__file__).resolve().parent.parent


def run_name(settings: RunSettings) -> str:
    """What tells the run from its sweep's others first (the MLflow UI shows about 25 characters of a name),
    then the attack, the API's output and budget, a target class, the surrogate's knowledge and the defense where
    they apply, the judge and the seed: `square-probabilities-b1000-cnn-s0`,
    `accounts10 knn_similarity | square-probabilities-b1000-knn_similarity-cnn-s0`."""
    attack = settings.attack_instance
    parts = [settings.attack.name, settings.access.output.value]
    if attack.threat_model.charged_queries:
        parts.append("binf" if settings.access.budget is None else f"b{settings.access.budget}")
    if attack.targeted:
        parts.append(f"t{attack.target_class}")
    if attack.threat_model.surrogate:
        parts.append(settings.surrogate.knowledge.value)
    if settings.defense.name != "none":
        parts.append(settings.defense.name)
    name = "-".join([*parts, settings.target.name, f"s{settings.seed}"])
    return f"{settings.run_label} | {name}" if settings.run_label else name


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


VERSIONED = ("torch", "torchvision", "adversarial-robustness-toolbox", "foolbox", "mlflow", "numpy")


def library_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def one(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} absent"

    return ", ".join(one(name) for name in VERSIONED)


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


NOTE = "mlflow.note.content"
"""The tag MLflow's UI shows as an experiment's or a run's description."""


def experiment_description(name: str) -> str:
    """The preset's own header comment when `name` is a preset's experiment, else what gavel's runs hold."""
    preset = REPO_DIR / "conf" / "experiment" / f"{name}.yaml"
    if preset.exists():
        lines = preset.read_text().splitlines()
        comment = [line.removeprefix("#").strip() for line in lines if line.startswith("# ") and "@package" not in line]
        if comment:
            return f"gavel preset `{name}`: " + " ".join(comment)
    return (
        f"gavel experiment `{name}`: adversarial robustness of AI judges, one run per attack configuration. "
        "Each run logs attack_success_rate with its 95% interval (_ci_low, _ci_high), the per-example CSV and a "
        "grid of adversarial examples; a sweep's parent run holds its summary table and curves."
    )


def use_experiment(name: str) -> None:
    """Make `name` the active experiment, with a description. A new experiment in a local sqlite store keeps its
    artifacts in `mlruns/` beside the database file (MLflow's default is `./mlruns` in whatever folder the job
    runs in, which scatters one store's artifacts over every working directory, a repository's included)."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(name) is None:
        database = Path(uri.removeprefix("sqlite:///"))
        try:
            mlflow.create_experiment(name, artifact_location=(database.resolve().parent / "mlruns").as_uri())
        except MlflowException:
            pass  # another job created it first: use theirs
    experiment = mlflow.set_experiment(name)
    if NOTE not in experiment.tags:
        mlflow.set_experiment_tag(NOTE, experiment_description(name))


def run_description(settings: RunSettings, metrics: dict[str, float]) -> str:
    """One line: who attacked what through which API, and the result with its interval."""
    attack = settings.attack_instance
    budget = "unlimited" if settings.access.budget is None else f"{settings.access.budget:,}"
    eps = "a patch" if attack.norm is None else f"L{attack.norm} eps {attack.eps:g}"
    queries = f", {budget} queries per example" if attack.threat_model.charged_queries else ""
    return (
        f"{settings.attack.name} ({attack.threat_model.name.replace('_', '-')}, {eps}) against the "
        f"{settings.target.name} judge on {settings.data.name.value}, {settings.access.output.value} API{queries}, "
        f"defense {settings.defense.name}: success {metrics['attack_success_rate']:.3f} "
        f"[{metrics['attack_success_rate_ci_low']:.3f}, {metrics['attack_success_rate_ci_high']:.3f}] over "
        f"{int(metrics['n_attacked'])} attacked examples."
    )


@contextmanager
def mlflow_run(settings: RunSettings, sweep_id: str | None = None, overrides: list[str] = ()):
    """Start the run with its params and tags; on any exception the run ends FAILED (KILLED on Ctrl-C)."""
    use_experiment(settings.experiment_name)
    attack = settings.attack_instance
    tags = {
        "threat_model": attack.threat_model.name,
        "norm": "patch" if attack.norm is None else f"L{attack.norm}",
        "attack": settings.attack.name,
        "judge": settings.target.name,
        "dataset": settings.data.name.value,
        "access.output": settings.access.output.value,
        "access.weights": settings.access.weights.value,
        "defense": settings.defense.name,
        "access.budget": "null" if settings.access.budget is None else str(settings.access.budget),
        "git_sha": git_sha(),
        "versions": library_versions(),
    }
    if sweep_id is not None:
        tags["sweep_id"] = sweep_id
    if overrides:
        tags["overrides"] = " ".join(overrides)
    resolved = settings.plain_config()
    with mlflow.start_run(run_name=run_name(settings), tags=tags) as run:
        mlflow.log_params(flatten(resolved))
        mlflow.log_text(OmegaConf.to_yaml(OmegaConf.create(resolved)), "config.yaml")
        yield run


def runs_page(experiment: str) -> str:
    """Where `mlflow ui`'s runs table of `experiment` opens (MLflow 3 opens an experiment on its GenAI overview;
    `workflowType=machine_learning` is its "Model training" view, checked in MLflow 3.17's UI)."""
    found = mlflow.get_experiment_by_name(experiment)
    where = f"#/experiments/{found.experiment_id}/runs?workflowType=machine_learning" if found else ""
    return f"http://127.0.0.1:5000/{where}"


def describe_run(settings: RunSettings, metrics: dict[str, float]) -> None:
    mlflow.set_tag(NOTE, run_description(settings, metrics))


def log_evaluation_data(x, y, dataset: str) -> None:
    """The evaluation examples, as an MLflow input (its digest tells runs on the same examples)."""
    data = mlflow.data.from_numpy(x, targets=y, name=f"{dataset}-evaluation-{len(y)}")
    mlflow.log_input(data, context="evaluation")


def log_evaluation(evaluation, per_example_csv: str, figures: dict) -> None:
    """The run's metrics, its success-vs-queries curve, the per-example CSV, and its figures (artifact name ->
    matplotlib figure)."""
    mlflow.log_metrics(evaluation.metrics)
    for step, rate in evaluation.success_curve:
        mlflow.log_metric("attack_success_rate_at_queries", rate, step=step)
    mlflow.log_text(per_example_csv, "per_example.csv")
    for name, figure in figures.items():
        mlflow.log_figure(figure, name)
        plt.close(figure)
