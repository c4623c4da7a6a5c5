"""SimBA (Guo et al., 2019) in the pixel basis, score-based, from ART."""

from __future__ import annotations

from typing import Literal

import numpy as np
from art.attacks.evasion import SimBA as ArtSimBA
from art.estimators.classification import BlackBoxClassifierNeuralNetwork
from art.utils import to_categorical

from attacks.params import PositiveInt
from attacks.query.base import QueryAttack
from targets.access import SCORE_BASED


class SimBA(QueryAttack):
    threat_model = SCORE_BASED
    supports_targeted = True
    start = "centre"

    def __init__(
        self, *, eps: float, max_iter: PositiveInt = 10000, order: Literal["random", "diag"] = "random", **common
    ) -> None:
        super().__init__(eps=eps, **common)
        self.max_iter = max_iter
        self.order = order

    def library_attack(self, estimator, budget):
        # Each iteration moves one pixel by +-eps, in an order drawn without repetition over the pixels; past
        # the pixel count ART starts a second pass, which could move a pixel to 2 eps: stop before it.
        n_pixels = int(np.prod(estimator.input_shape))
        return ArtSimBA(
            _probabilities(estimator),
            attack="px",
            max_iter=min(self.max_iter, n_pixels),
            order=self.order,
            epsilon=self.eps,
            targeted=self.targeted,
            verbose=False,
        )

    def generate(self, attack, x, y, adversarial, kit):
        # ART's SimBA reads `y` as one-hot rows (the target's, when targeted).
        return attack.generate(x, y=to_categorical(y, attack.estimator.nb_classes))


def _probabilities(estimator) -> BlackBoxClassifierNeuralNetwork:
    """ART's SimBA refuses scores that are not probabilities; an attacker handed logits applies the softmax
    itself, on its side of the API."""
    if estimator.client.policy.output != "logits":
        return estimator

    def predict(x: np.ndarray) -> np.ndarray:
        logits = estimator.predict(x).astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    return BlackBoxClassifierNeuralNetwork(
        predict, estimator.input_shape, estimator.nb_classes, clip_values=estimator.clip_values
    )
