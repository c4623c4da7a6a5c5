"""What the attacker knows decides what its surrogate trains on; proxies come from another distribution."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import tiny_config
from torchvision_files import write_mnist_style

from experiments import runner
from experiments.config import compose_config
from targets.datasets import load_dataset, proxy_pool, subsample


@pytest.fixture(scope="module")
def digits():
    return load_dataset(compose_config([]).data)


def test_restyled_proxy_keeps_labels_but_not_images(digits):
    proxy = proxy_pool(digits, "transformed", None, seed=0)
    assert proxy.x.shape == digits.attacker.x.shape and proxy.x.dtype == np.float32
    np.testing.assert_array_equal(proxy.y, digits.attacker.y)
    assert np.abs(proxy.x - digits.attacker.x).mean() > 0.1
    assert 0 <= proxy.x.min() and proxy.x.max() <= 1
    np.testing.assert_array_equal(proxy.x, proxy_pool(digits, "transformed", None, seed=0).x)


def test_mnist_from_a_local_folder_is_a_proxy_for_digits(tmp_path, digits):
    write_mnist_style(tmp_path, "MNIST", n_train=600, n_test=10, rng=np.random.default_rng(0))
    proxy = proxy_pool(digits, "mnist", str(tmp_path), seed=0)
    assert proxy.x.shape == (len(digits.attacker), 1, 8, 8)  # resized to the judge's inputs
    with pytest.raises(ValueError, match="surrogate.proxy='cifar10' for data=digits: allowed: transformed, mnist"):
        proxy_pool(digits, "cifar10", None, seed=0)
    with pytest.raises(FileNotFoundError, match="no MNIST files"):
        proxy_pool(digits, "mnist", str(tmp_path / "empty"), seed=0)


def test_digits_are_a_proxy_for_mnist(tmp_path):
    write_mnist_style(tmp_path, "MNIST", n_train=60, n_test=10, rng=np.random.default_rng(0))
    mnist = load_dataset(compose_config(["data=mnist", f"data.root={tmp_path}"]).data)
    proxy = proxy_pool(mnist, "digits", None, seed=0)
    assert proxy.x.shape == (len(mnist.attacker), 1, 28, 28)


def test_data_fraction_subsamples_deterministically(digits):
    tenth = subsample(digits.attacker, 0.1, seed=3)
    assert len(tenth) == 54
    np.testing.assert_array_equal(tenth.x, subsample(digits.attacker, 0.1, seed=3).x)
    assert subsample(digits.attacker, 1.0, seed=3) is digits.attacker


def surrogate_fingerprint() -> str:
    """The data fingerprint of the surrogate the last run trained, read from its cache entry."""
    run = mlflow.last_active_run()
    key = mlflow.get_run(run.info.run_id).data.tags["surrogate_key"]
    cache = Path(compose_config([]).cache_dir)
    return json.loads((cache / "models" / key / "meta.json").read_text())["spec"]["data_fingerprint"]


@pytest.mark.parametrize(
    "overrides, expected_pool",
    [
        ([], lambda d: d.attacker),
        (["surrogate.knowledge=leaked"], lambda d: d.judge),
        (["surrogate.data_fraction=0.3"], lambda d: subsample(d.attacker, 0.3, seed=1)),
        (["surrogate.knowledge=proxy"], lambda d: proxy_pool(d, "transformed", None, seed=1)),
    ],
)
def test_the_surrogate_trains_on_the_pool_its_knowledge_gives(digits, overrides, expected_pool):
    runner.run(tiny_config("transfer_pgd", *overrides))
    assert surrogate_fingerprint() == expected_pool(digits).fingerprint()


def test_an_ensemble_surrogate_trains_one_model_per_architecture():
    metrics = runner.run(tiny_config("transfer_pgd", "surrogate=ensemble"))
    assert 0 <= metrics["attack_success_rate"] <= 1
