"""What the benchmarks share: the default config's data and judge, trained once into the model cache."""

from __future__ import annotations

from experiments.config import compose_config
from experiments.settings import RunSettings
from targets.datasets import Dataset, load_dataset
from targets.training import ModelSpec, get_or_train


def default_judge(overrides: list[str] = ()) -> tuple[RunSettings, Dataset, object]:
    """The settings, data and (cached) judge of `gavel run` with `overrides`."""
    settings = RunSettings.from_config(compose_config(list(overrides)))
    data = load_dataset(settings.data)
    spec = ModelSpec.of("judge", settings.target.model, settings.seed, data.judge, data.input_shape, data.n_classes)
    return settings, data, get_or_train(spec, data.judge, settings.cache_dir).model
