"""The similarity encoder is trained once per operator's data, seed and size and kept in the model cache: a second
deployment loads it (no training) and encodes exactly as the first; anything that changes it changes the key; a
corrupt entry is retrained; without a cache it is trained each time, to the same weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gavel.defenses.base import OperatorKit
from gavel.defenses.detection import encoders
from gavel.defenses.detection.encoders import SimilaritySpec, similarity_encoder
from gavel.defenses.detection.knn_similarity import KnnSimilarity

STEPS = 5  # a few batches: what is checked is the caching, not the encoder's quality


def images(seed: int = 0, n: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)


@pytest.fixture
def no_training(monkeypatch):
    """After this, training the encoder fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the similarity encoder was trained again")

    def arm():
        monkeypatch.setattr(encoders, "_train_similarity", refuse)

    return arm


def test_a_second_deployment_loads_the_encoder_and_encodes_as_the_first(tmp_path, no_training, digits):
    data = digits.data
    operator = OperatorKit(data.judge.x, data.judge.y, data.n_classes, seed=0, cache_dir=tmp_path)
    defense = KnnSimilarity(encoder="similarity", train_steps=STEPS)
    first = defense.deploy(digits.judge, operator).detector
    entries = list((tmp_path / "models").iterdir())
    assert len(entries) == 1
    meta = json.loads((entries[0] / "meta.json").read_text())
    assert meta["spec"]["role"] == "similarity_encoder" and np.isfinite(meta["train_loss"])
    no_training()
    second = defense.deploy(digits.judge, operator).detector
    x = data.eval.x[:32]
    assert torch.equal(first.encoder(x), second.encoder(x))
    assert second.threshold == first.threshold


def test_without_a_cache_the_encoder_trains_to_the_same_weights(tmp_path):
    x = images()
    cached = similarity_encoder(x, dim=8, steps=STEPS, seed=3, cache_dir=tmp_path)
    fresh = similarity_encoder(x, dim=8, steps=STEPS, seed=3)
    assert torch.equal(cached(x), fresh(x))


@pytest.mark.parametrize(
    "change",
    [
        dict(dim=16),
        dict(steps=STEPS + 1),
        dict(seed=4),
        dict(x=images(seed=1)),
        dict(x=images()[:, :, :4, :]),  # the same values in another shape
    ],
    ids=["dim", "steps", "seed", "data", "shape"],
)
def test_whatever_changes_the_encoder_changes_its_key(change):
    base = dict(x=images(), dim=8, steps=STEPS, seed=3, device="cpu")
    assert SimilaritySpec.of(**{**base, **change}).key != SimilaritySpec.of(**base).key


def test_the_key_says_what_the_encoder_was_trained_on():
    x = images()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = SimilaritySpec.of(x, dim=8, steps=STEPS, seed=3, device="cpu")
        torch.set_num_threads(2)
        two = SimilaritySpec.of(x, dim=8, steps=STEPS, seed=3, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert (one.trained_on, two.trained_on) == ("cpu/1", "cpu/2") and one.key != two.key
    assert SimilaritySpec.of(x, dim=8, steps=STEPS, seed=3, device="cuda").trained_on == "cuda"


def test_a_corrupt_entry_is_retrained(tmp_path, caplog):
    x = images()
    expected = similarity_encoder(x, dim=8, steps=STEPS, seed=3, cache_dir=tmp_path)(x)
    (entry,) = list((tmp_path / "models").iterdir())
    (entry / "meta.json").write_text("null")
    with caplog.at_level("WARNING"):
        again = similarity_encoder(x, dim=8, steps=STEPS, seed=3, cache_dir=tmp_path)
    assert "corrupt cache entry" in caplog.text
    assert torch.equal(again(x), expected)
    assert json.loads((entry / "meta.json").read_text())["spec"]["role"] == "similarity_encoder"
