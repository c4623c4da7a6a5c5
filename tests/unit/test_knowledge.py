"""What the attacker knows decides what its surrogate trains on; proxies come from another distribution.
(The runner training each knowledge's surrogate is tested in tests/integration/test_surrogate_knowledge.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.accounting import make_client
from helpers.torchvision_files import write_idx_set, write_mnist_style

from gavel.experiments import models
from gavel.experiments.config import compose_config
from gavel.experiments.models import build_surrogate
from gavel.experiments.settings import RunSettings
from gavel.experiments.validation import ConfigError
from gavel.targets.data.proxy import proxy_pool
from gavel.targets.datasets import subsample
from gavel.targets.models import Ensemble
from gavel.targets.training import ModelSpec, get_or_train, predict_labels


@pytest.fixture(scope="module")
def digits_data():
    return RunSettings.from_config(compose_config([])).data_instance.load()


def test_restyled_proxy_keeps_labels_but_not_images(digits_data):
    proxy = proxy_pool(digits_data.attacker, "transformed", None, seed=0)
    assert proxy.x.shape == digits_data.attacker.x.shape and proxy.x.dtype == np.float32
    np.testing.assert_array_equal(proxy.y, digits_data.attacker.y)
    assert np.abs(proxy.x - digits_data.attacker.x).mean() > 0.1
    assert 0 <= proxy.x.min() and proxy.x.max() <= 1
    np.testing.assert_array_equal(proxy.x, proxy_pool(digits_data.attacker, "transformed", None, seed=0).x)


def test_mnist_from_a_local_folder_is_a_proxy_for_digits(tmp_path, digits_data):
    write_mnist_style(tmp_path, "MNIST", n_train=600, n_test=10, rng=np.random.default_rng(0))
    proxy = proxy_pool(digits_data.attacker, "mnist", str(tmp_path), seed=0)
    assert proxy.x.shape == (len(digits_data.attacker), 1, 8, 8)  # resized to the judge's inputs
    with pytest.raises(ConfigError, match="surrogate.proxy='cifar10': .* for data=digits; allowed: transformed, mnist"):
        RunSettings.from_config(compose_config(["surrogate.knowledge=proxy", "surrogate.proxy=cifar10"]))
    with pytest.raises(FileNotFoundError, match="no MNIST files"):
        proxy_pool(digits_data.attacker, "mnist", str(tmp_path / "empty"), seed=0)


def test_mnist_as_its_four_idx_files_is_a_proxy_for_digits(tmp_path, digits_data):
    write_idx_set(tmp_path, n_train=600, n_test=10, rng=np.random.default_rng(0))
    proxy = proxy_pool(digits_data.attacker, "mnist", str(tmp_path), seed=0)
    assert proxy.x.shape == (len(digits_data.attacker), 1, 8, 8)
    in_layout = tmp_path / "layout"
    write_mnist_style(in_layout, "MNIST", n_train=600, n_test=10, rng=np.random.default_rng(0))  # the same files
    np.testing.assert_array_equal(proxy.x, proxy_pool(digits_data.attacker, "mnist", str(in_layout), seed=0).x)


def test_digits_are_a_proxy_for_mnist(tmp_path):
    write_mnist_style(tmp_path, "MNIST", n_train=60, n_test=10, rng=np.random.default_rng(0))
    mnist = RunSettings.from_config(compose_config(["data=mnist", f"data.root={tmp_path}"])).data_instance.load()
    proxy = proxy_pool(mnist.attacker, "digits", None, seed=0)
    assert proxy.x.shape == (len(mnist.attacker), 1, 28, 28)


def test_data_fraction_subsamples_deterministically(digits_data):
    tenth = subsample(digits_data.attacker, 0.1, seed=3)
    assert len(tenth) == 54
    np.testing.assert_array_equal(tenth.x, subsample(digits_data.attacker, 0.1, seed=3).x)
    assert subsample(digits_data.attacker, 1.0, seed=3) is digits_data.attacker


def test_an_ensemble_surrogate_trains_one_model_per_architecture(digits, monkeypatch):
    """surrogate=ensemble: one member per configured architecture (a CNN and an MLP), each trained on the
    attacker's pool and cached under its own key; the ensemble's logits are the mean of theirs."""
    tags: list[dict] = []
    monkeypatch.setattr(models.mlflow, "set_tags", tags.append)
    overrides = ["attack=transfer_pgd", "access=hidden_label", "surrogate=ensemble"]
    settings = RunSettings.from_config(compose_config(overrides))
    data = digits.data
    spec = settings.surrogate_instance
    assert [m.arch.name for m in spec.members] == ["cnn", "mlp"]
    surrogate = build_surrogate(spec, data, make_client(digits.judge, data), 1, settings.cache_dir, "cpu")

    assert isinstance(surrogate, Ensemble) and len(surrogate.members) == len(spec.members) == 2
    cnn, mlp = surrogate.members
    assert any(isinstance(layer, torch.nn.Conv2d) for layer in cnn.net)
    assert not any(isinstance(layer, torch.nn.Conv2d) for layer in mlp.net)
    hidden = [layer.out_features for layer in mlp.net if isinstance(layer, torch.nn.Linear)]
    assert hidden == [256, 256, data.n_classes]

    # each member trained and cached under its own key (member k is seeded seed + k)
    member_specs = [
        ModelSpec.of("surrogate", member, 1 + k, data.attacker, data.input_shape, data.n_classes)
        for k, member in enumerate(spec.members)
    ]
    keys = [member_spec.key for member_spec in member_specs]
    assert len(set(keys)) == 2
    assert [t["surrogate_key"] for t in tags] == keys
    for member_spec, member in zip(member_specs, surrogate.members):
        accuracy = (predict_labels(member, data.attacker.x) == data.attacker.y).mean()
        assert accuracy > 0.9  # an untrained member guesses among ten classes
        cached = get_or_train(member_spec, data.attacker, settings.cache_dir)
        assert cached.cache_hit
        for name, tensor in cached.model.state_dict().items():
            assert torch.equal(tensor, member.state_dict()[name])

    with torch.no_grad():
        x = torch.from_numpy(data.eval.x[:5])
        torch.testing.assert_close(surrogate(x), (cnn(x) + mlp(x)) / 2)
