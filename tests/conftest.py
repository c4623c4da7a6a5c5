"""Fixtures only: MLflow and the model cache live in a temp folder, torch runs one thread, and `digits` is the
default config's data, judge and surrogate. Helpers the tests import live in `tests/helpers/`."""

from __future__ import annotations

import os

import pytest
import torch

from gavel.experiments.config import compose_config


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The judges are small: one thread is as fast on an idle machine and far faster on a busy one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def isolated_stores(tmp_path_factory):
    """One MLflow store and one model cache for the whole session: each judge is trained once."""
    root = tmp_path_factory.mktemp("stores")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "GAVEL_CACHE_DIR", "GAVEL_THREADS")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["GAVEL_CACHE_DIR"] = str(root / "cache")
    os.environ["GAVEL_THREADS"] = "1"  # every job, the CLI's too: the same models whichever test trains them
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
