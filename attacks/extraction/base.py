"""What every extraction method shares: its config, the attacker buying labels, and the inputs it asks about."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from gavel.attacks.base import as_scores
from gavel.targets.access import SHARED, AttackerClient
from gavel.targets.params import PositiveFloat, PositiveInt

Method = Literal["copycat", "knockoff", "jacobian"]
METHODS: tuple[str, ...] = get_args(Method)
Sampling = Literal["random", "adaptive"]


@dataclass(frozen=True)
class ExtractionSpec:
    """`surrogate.extraction`: how the attacker buys labels and trains on them."""

    method: Method = "copycat"
    label_budget: PositiveInt = 1000
    use_probability: bool = False
    sampling: Sampling = "random"
    seed_size: PositiveInt = 100
    step: PositiveFloat = 0.1
    tau: PositiveInt = 3


class LabellingSession:
    """The attacker buying labels: every answer is the judge's (one-hot for label-only APIs)."""

    def __init__(self, client: AttackerClient) -> None:
        self.client = client

    def predict(self, x: np.ndarray) -> np.ndarray:
        return as_scores(self.client.query(np.asarray(x, dtype=np.float32), example=SHARED), self.client.n_classes)

    def labels(self, x: np.ndarray) -> np.ndarray:
        return self.predict(x).argmax(axis=1).astype(np.int64)


def query_set(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At least `n` unlabelled inputs: the attacker's pool, then jittered copies of it (a one-pixel shift and
    light noise) so that a labelling budget larger than the pool still buys new inputs."""
    rng = np.random.default_rng(seed)
    parts = [x]
    while sum(len(p) for p in parts) < n:
        shifted = np.roll(x, shift=(int(rng.integers(-1, 2)), int(rng.integers(-1, 2))), axis=(2, 3))
        parts.append(np.clip(shifted + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32))
    return np.concatenate(parts)[: max(n, len(x))]
