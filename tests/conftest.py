"""Tests compose the real Hydra config and shrink it; MLflow and the model cache live in a temp folder."""
from __future__ import annotations

import os

import pytest
import torch
from hydra.utils import get_class

from experiments.config import compose_config

# The access each threat model is run under in the smoke tests, with budgets small enough to be quick.
ACCESS_FOR = {
    "white_box": ["access=open"],
    "transfer": ["access=hidden_label"],
    "score_based": ["access=hidden_probabilities", "access.budget=30"],
    "decision_based": ["access=hidden_label", "access.budget=40"],
}
TINY = ["n_examples=8"]


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
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "GAVEL_CACHE_DIR")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["GAVEL_CACHE_DIR"] = str(root / "cache")
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def digits(isolated_stores):
    """The default config's digits data, judge and surrogate (`accounting.Digits`), from the session's cache."""
    from accounting import Digits

    return Digits.load(compose_config([]))


def threat_model_of(attack: str) -> str:
    """The attack's threat model; for a hybrid attacker, its query stage's (which decides the access it needs)."""
    from experiments.validation import constructor_kwargs

    node = compose_config([f"attack={attack}"]).attack
    instance = get_class(node._target_)(**constructor_kwargs(node))
    return instance.query_attack.threat_model if instance.threat_model == "hybrid" else instance.threat_model


# Attack hyperparameters shrunk for the smoke tests, applied to whichever of them an attack has.
SHRINK = {"max_iter": 3, "init_eval": 10, "max_eval": 20}


def tiny_config(attack: str, *overrides: str):
    """The real config for `attack`, under an access policy its threat model allows, shrunk for speed."""
    base = [f"attack={attack}", *ACCESS_FOR[threat_model_of(attack)], *TINY]
    keys = compose_config(base).attack
    small = [f"attack.{key}={value}" for key, value in SHRINK.items() if key in keys]
    return compose_config([*base, *small, *overrides])
