"""The poisoning threat model as the tests measure it: a backdoor run through the real runner with each evaluation
example's success read back from MLflow (`backdoor_run`), two such runs paired on the examples both attacked
(`paired`), and a poisoned judge beside the very pool it was trained on (`poisoned_judge`)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient
from torch import nn

from gavel.attacks.poisoning.base import PoisonContext, PoisonedPool
from gavel.experiments import runner
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.experiments.training_stage import POISON_SEED, train_judge
from gavel.targets.datasets import Dataset
from gavel.targets.training import ModelSpec

BACKDOOR = ["attack=backdoor", "access=hidden_label"]


@dataclass(frozen=True)
class Backdoored:
    metrics: dict[str, float]
    """What `runner.run` returned."""
    logged: dict[str, float]
    """What MLflow holds for the run."""
    tags: dict[str, str]
    rows: list[dict[str, str]]
    """per_example.csv, one row per evaluation example."""

    @property
    def fooled(self) -> dict[int, bool]:
        """Each attacked example's success, by its index among the evaluation examples."""
        return {int(row["index"]): row["success"] == "1" for row in self.rows if row["attacked"] == "1"}

    def __getitem__(self, key: str) -> float:
        return self.metrics[key]


def backdoor_run(*overrides: str, n_examples: int = 200) -> Backdoored:
    """`attack=backdoor` under a labels-only API (one query per example) on the real config, in process."""
    args = [*BACKDOOR, f"n_examples={n_examples}", *overrides]
    settings = RunSettings.from_config(compose_config(args))
    metrics = runner.run(settings, runner.prepare(settings), overrides=args)  # tagged as `gavel run` tags them
    run = MlflowClient().get_run(mlflow.last_active_run().info.run_id)
    text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/per_example.csv")
    return Backdoored(metrics, dict(run.data.metrics), dict(run.data.tags), list(csv.DictReader(io.StringIO(text))))


def paired(first: Backdoored, second: Backdoored) -> tuple[np.ndarray, np.ndarray]:
    """Each run's success on the examples both attacked: two judges (poisoned otherwise, or cleaned otherwise) get
    almost the same evaluation examples right, and only those are attacked."""
    shared = sorted(set(first.fooled) & set(second.fooled))
    assert len(shared) >= 0.9 * max(len(first.fooled), len(second.fooled)), "the runs attacked other examples"
    return np.array([first.fooled[i] for i in shared]), np.array([second.fooled[i] for i in shared])


@dataclass(frozen=True)
class PoisonedJudge:
    settings: RunSettings
    data: Dataset
    contributed: PoisonedPool
    """The pool as the contributors gave it, poison and all, and which examples the attacker poisoned."""
    judge: nn.Module
    """The judge trained on it (the training stage's, from the model cache)."""


def poisoned_judge(*overrides: str) -> PoisonedJudge:
    """The training stage's poisoned judge for the real config with `overrides` (a `poison=`), and the poisoned pool
    rebuilt as the stage builds it: the judge's cache key (which hashes its training pool) proves it is that pool."""
    settings = RunSettings.from_config(compose_config(overrides))
    data = settings.data_instance.load()
    poison = settings.poison_instance
    context = PoisonContext(
        data.contributors, settings.data_instance.contributors, settings.seed + POISON_SEED, data.attacker,
        str(settings.cache_dir),
    )  # fmt: skip
    contributed = poison.apply(data.judge, context)
    trained = train_judge(settings, data, "cpu").judge
    model = settings.target_instance.model
    spec = ModelSpec.of(
        "judge", model, settings.seed, contributed.pool, data.input_shape, data.n_classes, provenance=poison.as_dict()
    )
    assert trained.tags["judge_key"] == spec.key, "the judge was trained on another pool than the one rebuilt here"
    return PoisonedJudge(settings, data, contributed, trained.model)
