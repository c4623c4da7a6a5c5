"""Judges gavel trains itself (`target=cnn|mlp|resnet18`): an architecture and a training recipe, trained on the
judge's pool and kept in the model cache under a key that hashes everything that determines them."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from gavel.targets.architectures.base import Architecture
from gavel.targets.datasets import Dataset, Pool
from gavel.targets.errors import SourceError
from gavel.targets.judges.base import JudgeSource, ProvidedJudge
from gavel.targets.training import (
    CachedModel,
    ModelConfig,
    ModelSpec,
    Recipe,
    Trainer,
    get_or_build,
    get_or_train,
    predict_labels,
)


class TrainedJudge(JudgeSource):
    trained_on_the_data = True

    def __init__(self, *, arch: Architecture, train: Recipe) -> None:
        self.model = ModelConfig(arch, train)

    @property
    def adversarial(self) -> str | None:
        return self.model.train.adversarial

    def prepare(self, data: Dataset, device: str) -> None:
        """Only a check: the judge is trained (or loaded from the cache) inside the run."""
        if data.judge is None:
            raise SourceError(
                f"data.judge_train=None: a judge gavel trains (target.arch={self.model.arch.name}) needs its training "
                "data; allowed: a path with the judge's training examples, or a judge of your own "
                "(target=torchscript, state_dict, onnx or mlflow)"
            )

    def spec(self, data: Dataset, seed: int, device: str, pool: Pool | None = None, provenance: dict | None = None):
        """The judge's `ModelSpec`: on the data's judge pool, or on `pool` (contributed, then sanitised) as
        `provenance` says it came to be."""
        pool = data.judge if pool is None else pool
        return ModelSpec.of(
            "judge", self.model, seed, pool, data.input_shape, data.n_classes, device, provenance=provenance
        )

    def provide(self, data: Dataset, seed: int, cache_dir: Path, device: str) -> ProvidedJudge:
        return self.train_on(data.judge, data, seed, cache_dir, device)

    def train_on(
        self, pool: Pool, data: Dataset, seed: int, cache_dir: Path, device: str, provenance: dict | None = None
    ) -> ProvidedJudge:
        """The judge trained (or loaded from the cache) on `pool`, which `provenance` says how it came to be."""
        spec = self.spec(data, seed, device, pool, provenance)
        return self._provided(get_or_train(spec, pool, cache_dir, device))

    def fine_tune(
        self, base: ProvidedJudge, pool: Pool, recipe: Recipe, data: Dataset, seed: int, cache_dir: Path, device: str,
        provenance: dict,
    ) -> ProvidedJudge:  # fmt: skip
        """`base` trained further on `pool` by `recipe` (a copy; cached under a key that names `base`)."""
        model = ModelConfig(self.model.arch, recipe)
        provenance = {**provenance, "fine_tuned_from": base.tags["judge_key"]}
        spec = ModelSpec.of("judge", model, seed, pool, data.input_shape, data.n_classes, device, provenance)

        def train_it():
            tuned = copy.deepcopy(base.model).to(device)
            Trainer(recipe, seed, device).fit(tuned, torch.from_numpy(pool.x), torch.from_numpy(pool.y))
            tuned.eval()
            return tuned, float((predict_labels(tuned, pool.x, device=device) == pool.y).mean())

        built = get_or_build(spec, train_it, cache_dir, device)
        return self._provided(CachedModel(built.module, spec.key, built.cache_hit, built.figure, built.train_seconds))

    def _provided(self, cached: CachedModel) -> ProvidedJudge:
        tags = {"judge_key": cached.key, "judge_cache": "hit" if cached.cache_hit else "miss"}
        if self.model.train.adversarial is not None:
            tags["judge.adversarial_training"] = f"{self.model.train.adversarial} eps {self.model.train.eps:g}"
        figures = {"judge_train_accuracy": cached.train_accuracy}
        if cached.train_seconds is not None:
            figures["judge_train_seconds"] = cached.train_seconds
        description = f"the {self.model.arch.name} judge gavel trained"
        return ProvidedJudge(cached.model, tags=tags, figures=figures, description=description)
