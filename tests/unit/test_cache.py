"""Judges are trained once and loaded after; a corrupt or partial entry is retrained, never used."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from gavel.targets.architectures.mlp import MLP
from gavel.targets.datasets import Pool
from gavel.targets.training import ModelConfig, ModelSpec, Recipe, get_or_train

MODEL = ModelConfig(MLP(hidden=(16,)), Recipe(epochs=2, batch_size=32, lr=0.01, weight_decay=0.0))


@pytest.fixture
def pool():
    rng = np.random.default_rng(0)
    return Pool(rng.random((64, 1, 4, 4), dtype=np.float32), rng.integers(0, 3, 64).astype(np.int64))


def spec_for(pool, seed=0, model=MODEL):
    return ModelSpec.of("judge", model, seed, pool, (1, 4, 4), 3)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_second_call_is_a_cache_hit_with_identical_weights(tmp_path, pool, caplog):
    first = get_or_train(spec_for(pool), pool, tmp_path)
    with caplog.at_level(logging.INFO, logger="gavel.targets.training"):
        second = get_or_train(spec_for(pool), pool, tmp_path)
    assert not first.cache_hit and second.cache_hit
    assert "cache hit" in caplog.text
    assert same_weights(weights(first.model), weights(second.model))


def test_key_changes_with_everything_that_determines_the_model(pool):
    other_pool = Pool(pool.x[::-1].copy(), pool.y[::-1].copy())
    deeper = replace(MODEL, arch=MLP(hidden=(32,)))
    longer = replace(MODEL, train=replace(MODEL.train, epochs=3))
    keys = {
        spec_for(p, seed=s, model=m).key
        for p, s, m in [
            (pool, 0, MODEL),
            (pool, 1, MODEL),
            (other_pool, 0, MODEL),
            (pool, 0, deeper),
            (pool, 0, longer),
        ]
    }
    assert len(keys) == 5


def test_same_seed_trains_identical_weights(tmp_path, pool):
    a = get_or_train(spec_for(pool), pool, tmp_path / "a")
    b = get_or_train(spec_for(pool), pool, tmp_path / "b")
    assert same_weights(weights(a.model), weights(b.model))


def corrupt_truncated(entry):
    data = (entry / "model.pt").read_bytes()
    (entry / "model.pt").write_bytes(data[: len(data) // 2])


def corrupt_missing_weights(entry):
    (entry / "model.pt").unlink()


def corrupt_garbage_meta(entry):
    (entry / "meta.json").write_text("{not json")


def corrupt_flipped_byte(entry):
    data = bytearray((entry / "model.pt").read_bytes())
    data[-10] ^= 0xFF
    (entry / "model.pt").write_bytes(bytes(data))


@pytest.mark.parametrize(
    "corrupt", [corrupt_truncated, corrupt_missing_weights, corrupt_garbage_meta, corrupt_flipped_byte]
)
def test_corrupt_or_partial_entry_is_detected_and_retrained(tmp_path, pool, caplog, corrupt):
    spec = spec_for(pool)
    original = weights(get_or_train(spec, pool, tmp_path).model)
    corrupt(tmp_path / "models" / spec.key)
    with caplog.at_level(logging.WARNING, logger="gavel.targets.training"):
        recovered = get_or_train(spec, pool, tmp_path)
    assert not recovered.cache_hit and "corrupt cache entry" in caplog.text
    assert same_weights(weights(recovered.model), original)  # retrained deterministically
    assert get_or_train(spec, pool, tmp_path).cache_hit  # and the entry was repaired


class Payload:
    """An object whose unpickling would write a file: loading must never run it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_loading_never_unpickles_arbitrary_objects(tmp_path, pool, caplog):
    spec = spec_for(pool)
    get_or_train(spec, pool, tmp_path)
    entry = tmp_path / "models" / spec.key
    marker = tmp_path / "pwned"
    (entry / "model.pt").write_bytes(pickle.dumps(Payload(marker)))
    meta = json.loads((entry / "meta.json").read_text())
    meta["sha256"] = hashlib.sha256((entry / "model.pt").read_bytes()).hexdigest()  # checksum passes
    (entry / "meta.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="gavel.targets.training"):
        recovered = get_or_train(spec, pool, tmp_path)
    assert not marker.exists()
    assert not recovered.cache_hit and "corrupt cache entry" in caplog.text


def test_no_partial_entry_is_left_when_training_fails(tmp_path, pool, monkeypatch):
    import gavel.targets.training as training

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(training.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        get_or_train(spec_for(pool), pool, tmp_path)
    assert list((tmp_path / "models").iterdir()) == []
