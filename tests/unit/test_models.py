"""Every architecture, the torchvision one included, takes [0, 1] NCHW inputs and returns logits."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.targets.architectures.mlp import MLP
from gavel.targets.datasets import Pool
from gavel.targets.models import build_model
from gavel.targets.training import ModelSpec, get_or_train, predict_labels


def target_model(arch: str):
    """`target=<arch>` as the typed config boundary reads it."""
    return RunSettings.from_config(compose_config([f"target={arch}"])).target_instance.model


@pytest.mark.parametrize("arch", ["cnn", "mlp", "resnet18"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_architectures_map_images_to_logits(arch, shape):
    model = build_model(target_model(arch).arch, shape, 10).eval()
    with torch.no_grad():
        out = model(torch.rand(2, *shape))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_normalisation_lives_in_the_state_dict():
    model = build_model(MLP(hidden=(8,)), (1, 4, 4), 3)
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())


def test_torchvision_resnet_trains_and_caches_like_any_judge(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 64).astype(np.int64)
    x = np.clip(rng.normal(0.3 + 0.4 * y[:, None, None, None], 0.1, (64, 1, 8, 8)), 0, 1).astype(np.float32)
    pool = Pool(x, y)
    model = target_model("resnet18")
    model = replace(model, train=replace(model.train, epochs=3, batch_size=16))
    spec = ModelSpec.of("judge", model, 0, pool, (1, 8, 8), 2)
    trained = get_or_train(spec, pool, tmp_path)
    assert (predict_labels(trained.model, x) == y).mean() > 0.9  # an easy, separable task
    assert get_or_train(spec, pool, tmp_path).cache_hit
