"""Judges gavel trains itself (`target=cnn|mlp|resnet18`): an architecture and a training recipe, trained on the
judge's pool and kept in the model cache under a key that hashes everything that determines them."""

from __future__ import annotations

from pathlib import Path

from gavel.targets.architectures.base import Architecture
from gavel.targets.datasets import Dataset
from gavel.targets.errors import SourceError
from gavel.targets.judges.base import JudgeSource, ProvidedJudge
from gavel.targets.training import ModelConfig, ModelSpec, Recipe, get_or_train


class TrainedJudge(JudgeSource):
    trained_on_the_data = True

    def __init__(self, *, arch: Architecture, train: Recipe) -> None:
        self.model = ModelConfig(arch, train)

    def prepare(self, data: Dataset, device: str) -> None:
        """Only a check: the judge is trained (or loaded from the cache) inside the run."""
        if data.judge is None:
            raise SourceError(
                f"data.judge_train=None: a judge gavel trains (target.arch={self.model.arch.name}) needs its training "
                "data; allowed: a path with the judge's training examples, or a judge of your own "
                "(target=torchscript, state_dict, onnx or mlflow)"
            )

    def spec(self, data: Dataset, seed: int, device: str) -> ModelSpec:
        return ModelSpec.of("judge", self.model, seed, data.judge, data.input_shape, data.n_classes, device)

    def provide(self, data: Dataset, seed: int, cache_dir: Path, device: str) -> ProvidedJudge:
        cached = get_or_train(self.spec(data, seed, device), data.judge, cache_dir, device)
        tags = {"judge_key": cached.key, "judge_cache": "hit" if cached.cache_hit else "miss"}
        if self.model.train.adversarial is not None:
            tags["judge.adversarial_training"] = f"{self.model.train.adversarial} eps {self.model.train.eps:g}"
        figures = {"judge_train_accuracy": cached.train_accuracy}
        if cached.train_seconds is not None:
            figures["judge_train_seconds"] = cached.train_seconds
        description = f"the {self.model.arch.name} judge gavel trained"
        return ProvidedJudge(cached.model, tags=tags, figures=figures, description=description)
