"""The model cache under concurrency: parallel jobs that need the same judge train it once and load identical
weights; two writers of one key never crash; entries that were once never retrained (meta.json holding
`null`, one missing a key, a file where the folder should be) are retrained and repaired."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import queue
import threading
import time
import traceback
from pathlib import Path

import filelock
import numpy as np
import pytest
import torch
from helpers.seed_shift import threads_for_tests

import gavel.targets.training as training
from gavel.targets.architectures.mlp import MLP
from gavel.targets.datasets import Pool
from gavel.targets.training import ModelConfig, ModelSpec, Recipe, get_or_train

MODEL = ModelConfig(MLP(hidden=(16,)), Recipe(epochs=3, batch_size=32, lr=0.01, weight_decay=0.0))
WORKERS = 4
TRIALS = 3


def make_pool() -> Pool:
    rng = np.random.default_rng(0)
    return Pool(rng.random((256, 1, 4, 4), dtype=np.float32), rng.integers(0, 3, 256).astype(np.int64))


def spec_for(pool: Pool) -> ModelSpec:
    return ModelSpec.of("judge", MODEL, 0, pool, (1, 4, 4), 3)


def digest(model: torch.nn.Module) -> str:
    """SHA-256 of every tensor's name, dtype, shape and bytes: equal only for bitwise identical weights."""
    sha = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        sha.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


def leftovers(cache_dir) -> list[str]:
    """Everything under `models/` that is not a cache entry: staging folders, entries set aside, lock files."""
    models = cache_dir / "models"
    return sorted(p.name for p in models.iterdir() if p.name.startswith(".") or not p.is_dir())


@pytest.fixture
def pool():
    return make_pool()


# --- entries that used to crash or be used as they were --------------------------------------------------


def meta_null(entry):
    (entry / "meta.json").write_text("null")


def meta_missing_train_accuracy(entry):
    meta = json.loads((entry / "meta.json").read_text())
    del meta["train_accuracy"]
    (entry / "meta.json").write_text(json.dumps(meta))


def meta_missing_sha256(entry):
    meta = json.loads((entry / "meta.json").read_text())
    del meta["sha256"]
    (entry / "meta.json").write_text(json.dumps(meta))


def meta_a_list(entry):
    (entry / "meta.json").write_text("[1, 2]")


def entry_is_a_file(entry):
    for child in entry.iterdir():
        child.unlink()
    entry.rmdir()
    entry.write_text("not a cache entry")


@pytest.mark.parametrize(
    "corrupt", [meta_null, meta_missing_train_accuracy, meta_missing_sha256, meta_a_list, entry_is_a_file]
)
def test_malformed_entry_is_retrained_and_repaired(tmp_path, pool, caplog, corrupt):
    spec = spec_for(pool)
    original = digest(get_or_train(spec, pool, tmp_path).model)
    entry = tmp_path / "models" / spec.key
    corrupt(entry)
    with caplog.at_level(logging.WARNING, logger="gavel.targets.training"):
        recovered = get_or_train(spec, pool, tmp_path)
    assert not recovered.cache_hit and "corrupt cache entry" in caplog.text
    assert digest(recovered.model) == original  # retrained deterministically
    assert isinstance(recovered.train_accuracy, float)
    assert entry.is_dir() and leftovers(tmp_path) == []
    again = get_or_train(spec, pool, tmp_path)
    assert again.cache_hit and digest(again.model) == original  # and the entry was repaired


# --- two writers of one key -----------------------------------------------------------------------------


def test_a_writer_that_loses_the_race_keeps_the_winners_entry(tmp_path, pool, monkeypatch):
    """The old crash, made deterministic: another writer installs a complete entry between this writer's check
    and its rename (before: `os.replace` onto a non-empty folder raised OSError)."""
    spec = spec_for(pool)
    entry = tmp_path / "models" / spec.key
    model, accuracy = training.train(spec, pool)
    real_replace = os.replace
    raced = []

    def replace_after_another_writer(src, dst):
        if not raced and str(dst) == str(entry):
            raced.append(True)
            training._store(entry, spec, model, accuracy, seconds=1.0)  # the other writer wins the race
        return real_replace(src, dst)

    monkeypatch.setattr(training.os, "replace", replace_after_another_writer)
    training._store(entry, spec, model, accuracy, seconds=1.0)  # must not raise
    monkeypatch.undo()
    assert raced and entry.is_dir() and leftovers(tmp_path) == []
    loaded = get_or_train(spec, pool, tmp_path)
    assert loaded.cache_hit and digest(loaded.model) == digest(model)


def test_writers_storing_one_key_at_once_never_crash(tmp_path, pool):
    """Many threads store the same key at the same moment (each rename releases the GIL, so they interleave);
    none raises, and one complete entry is left."""
    spec = spec_for(pool)
    entry = tmp_path / "models" / spec.key
    model, accuracy = training.train(spec, pool)
    for trial in range(10):
        if entry.exists():
            training.shutil.rmtree(entry)
        start = threading.Barrier(8)
        errors = []

        def store():
            start.wait()
            try:
                training._store(entry, spec, model, accuracy, seconds=1.0)
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(repr(error))

        threads = [threading.Thread(target=store) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], f"trial {trial}: {errors}"
        assert entry.is_dir() and leftovers(tmp_path) == []
    assert get_or_train(spec, pool, tmp_path).cache_hit


# --- several processes, one empty cache -----------------------------------------------------------------


def worker(cache_dirs, start, results):
    """One parallel job: for each trial, wait for the others, then ask for the judge (on the session's thread
    count, which the model's key holds, so that the test can train the expected weights itself)."""
    torch.set_num_threads(threads_for_tests())
    pool = make_pool()
    spec = spec_for(pool)
    training.train(spec, pool)  # warm up (the first Adam imports torch._dynamo) so the jobs reach the lock together
    for cache_dir in cache_dirs:
        try:
            start.wait(timeout=60)
            got = get_or_train(spec, pool, cache_dir)
            results.put((cache_dir, os.getpid(), got.cache_hit, digest(got.model), None))
        except BaseException:  # noqa: BLE001 - sent to the test
            results.put((cache_dir, os.getpid(), None, None, traceback.format_exc()))


@pytest.mark.slow
def test_parallel_jobs_on_one_empty_cache_train_once_and_load_identical_weights(tmp_path):
    context = multiprocessing.get_context("spawn")
    cache_dirs = [str(tmp_path / f"trial{trial}") for trial in range(TRIALS)]
    start = context.Barrier(WORKERS)
    results = context.Queue()
    jobs = [context.Process(target=worker, args=(cache_dirs, start, results)) for _ in range(WORKERS)]
    for job in jobs:
        job.start()
    try:
        replies = []
        for _ in range(WORKERS * TRIALS):
            try:
                replies.append(results.get(timeout=120))
            except queue.Empty:
                pytest.fail(f"only {len(replies)} of {WORKERS * TRIALS} jobs answered")
    finally:  # every job has answered (or failed to): no need to wait for torch's slow interpreter teardown
        for job in jobs:
            job.kill()
            job.join()
    errors = [error for *_, error in replies if error]
    assert errors == [], errors[0]
    expected = digest(training.train(spec_for(make_pool()), make_pool())[0])
    key = spec_for(make_pool()).key
    for cache_dir in cache_dirs:
        trial = [reply for reply in replies if reply[0] == cache_dir]
        assert len(trial) == WORKERS
        assert sorted(hit for _, _, hit, _, _ in trial) == [False] + [True] * (WORKERS - 1), cache_dir
        assert {weights for _, _, _, weights, _ in trial} == {expected}
        models = Path(cache_dir) / "models"
        assert sorted(p.name for p in models.iterdir()) == [key]


# --- the lock -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "soft"])
def test_a_job_waits_for_the_holder_of_the_keys_lock_and_says_so(tmp_path, pool, caplog, monkeypatch, kind):
    monkeypatch.setenv("GAVEL_CACHE_LOCK", kind)
    monkeypatch.setattr(training, "LOCK_LOG_EVERY_S", 0.05)
    spec = spec_for(pool)
    path = tmp_path / "locks" / f"{spec.key}.lock"
    path.parent.mkdir(parents=True)
    holder = (filelock.SoftFileLock if kind == "soft" else filelock.FileLock)(str(path))
    done = []
    with caplog.at_level(logging.INFO, logger="gavel.targets.training"):
        with holder:  # another job, training
            job = threading.Thread(target=lambda: done.append(get_or_train(spec, pool, tmp_path)))
            job.start()
            deadline = time.monotonic() + 30
            while "still waiting" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not done  # blocked while the lock is held
        job.join(timeout=30)
    assert f"waiting for another process training {spec.key}" in caplog.text
    assert "still waiting for the lock" in caplog.text
    assert done and not done[0].cache_hit  # the holder stored nothing, so this job trained
    assert get_or_train(spec, pool, tmp_path).cache_hit


def test_an_unknown_lock_kind_is_refused(tmp_path, pool, monkeypatch):
    monkeypatch.setenv("GAVEL_CACHE_LOCK", "nfs")
    with pytest.raises(ValueError, match="GAVEL_CACHE_LOCK=nfs"):
        get_or_train(spec_for(pool), pool, tmp_path)
