"""Fixtures only: MLflow and the model cache live in a temp folder, torch runs one thread, and `digits` is the
default config's data, judge and surrogate. Helpers the tests import live in `tests/helpers/`.

`GAVEL_TEST_SEED=K` and `GAVEL_TEST_THREADS=N` run the whole suite on other weights (`helpers/seed_shift`): no test
may rely on the weights one machine trains."""

from __future__ import annotations

import os

import pytest
import torch
from helpers.seed_shift import seed_shift, shift_training_seeds, threads_for_tests

import gavel.targets.training
from gavel.experiments.config import compose_config

SEED_SHIFT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers", "seed_shift")
shift_training_seeds(gavel.targets.training)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The judges are small: one thread is as fast on an idle machine and far faster on a busy one
    (`GAVEL_TEST_THREADS` chooses another count, to prove no test relies on one count's weights)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_for_tests())
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def isolated_stores(tmp_path_factory):
    """One MLflow store and one model cache for the whole session: each judge is trained once."""
    root = tmp_path_factory.mktemp("stores")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "GAVEL_CACHE_DIR", "GAVEL_THREADS", "PYTHONPATH")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["GAVEL_CACHE_DIR"] = str(root / "cache")
    # every job, the CLI's too: the same models whichever test trains them
    os.environ["GAVEL_THREADS"] = str(threads_for_tests())
    if seed_shift():  # the processes tests start (`gavel run`, workers) shift their seeds too (sitecustomize)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SEED_SHIFT_PATH, saved["PYTHONPATH"]) if p)
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def digits(isolated_stores):
    """The default config's digits data, judge and surrogate (`helpers.accounting.Digits`), from the session's
    cache."""
    from helpers.accounting import Digits

    from gavel.experiments.settings import RunSettings

    return Digits.load(RunSettings.from_config(compose_config([])))
