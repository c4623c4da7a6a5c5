"""Scaffolding for the tests of `gavel serve`: a judge deployed as the command deploys it (or a tiny one, for
admission arithmetic), a store with keys, a service on a clock the test moves, and request bodies."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gavel.experiments.config import compose_config
from gavel.experiments.serve import tokens
from gavel.experiments.serve.app import create_app
from gavel.experiments.serve.deployment import SERVING_ATTACK, Deployment, deploy
from gavel.experiments.serve.server import BackgroundServer
from gavel.experiments.serve.service import Service, ServiceLimits
from gavel.experiments.serve.store import Store
from gavel.experiments.settings import RunSettings
from gavel.targets.access import wire
from gavel.targets.access.policy import Output
from gavel.targets.access.responder import ShieldResponder
from gavel.targets.access.shield import Detector, Shield

TINY_SHAPE = (1, 4, 4)
TINY_CLASSES = 3


class Clock:
    """Unix seconds that move only when the test says (`advance`)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MarkedRowDetector(Detector):
    """Flags a row whose first pixel is above 0.5 (a test marks the rows it wants caught)."""

    threshold = 0.5

    def scores(self, x: np.ndarray, account: int) -> np.ndarray:
        return x[:, 0, 0, 0].astype(np.float64)

    def remember(self, x: np.ndarray, account: int) -> None:
        pass

    def fresh(self) -> MarkedRowDetector:
        return MarkedRowDetector()


def tiny_deployment(output: str = "probabilities", detector: Detector | None = None, on_detection: str = "ban"):
    """A linear judge on 1x4x4 inputs, 3 classes: admission and accounting tests need no trained judge."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, TINY_CLASSES)).eval()
    shield = Shield(model, detector=detector, on_detection=on_detection)
    responder = ShieldResponder(shield, n_classes=TINY_CLASSES)
    return Deployment(responder, TINY_SHAPE, TINY_CLASSES, Output(output), "a tiny linear judge")


def digits_deployment(*overrides: str) -> Deployment:
    """The digits judge of the default config (the session's model cache) behind `overrides`' defense, as `gavel
    serve` builds it."""
    settings = RunSettings.from_config(compose_config([SERVING_ATTACK, *overrides]))
    return deploy(settings, threads=torch.get_num_threads())  # the test session's threads (conftest)


def limits(**changes) -> ServiceLimits:
    values = dict(model_name="judge", max_rows=64, max_bytes=256 * 1024, require_signature=False,
                  signature_window_s=300.0)  # fmt: skip
    return ServiceLimits(**{**values, **changes})


def add_key(
    store: Store, name: str, quota: int, *, window: float = 24.0, rate: int | None = None, kind: str = "key"
) -> str:
    """A key in `store`, as `gavel keys add` makes one (`kind="auditor"`: `--auditor`); returns its token."""
    new = tokens.new_token()
    store.add_key(name, kind, quota=quota, window_hours=window, rate=rate, created=time.time(), lookup=new.lookup,
                  secret_sha256=new.secret_sha256)  # fmt: skip
    return new.token


def rows(n: int, shape=TINY_SHAPE, seed: int = 0, mark: list[int] = ()) -> np.ndarray:
    """`n` inputs in [0, 0.5) (nothing a `MarkedRowDetector` flags), the rows in `mark` marked."""
    x = np.random.default_rng(seed).random((n, *shape), dtype=np.float32) * 0.5
    for row in mark:
        x[row, 0, 0, 0] = 0.9
    return x


def v2_body(x: np.ndarray, output: str | None = None, *, partial: bool = False) -> bytes:
    body = wire.encode_v2_request(x, output or "label", partial=partial)
    if output is None:
        del body["outputs"]
    return json.dumps(body).encode()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@contextmanager
def serving(deployment: Deployment, store_path: Path | str, clock=time.time, **limit_changes):
    """The service on a background uvicorn server: yields (url, service, store); the store is closed after."""
    store = Store(str(store_path))
    try:
        service = Service(deployment, store, limits(**limit_changes), clock=clock)
        with BackgroundServer(create_app(service)) as server:
            yield server.url, service, store
    finally:
        store.close()
