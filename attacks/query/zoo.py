"""ZOO (Chen et al., 2017): Carlini-Wagner's loss with coordinate-wise finite differences, score-based, from ART."""

from __future__ import annotations

import numpy as np
from art.attacks.evasion import ZooAttack

from gavel.attacks.query.base import QueryAttack
from gavel.targets.access import SCORE_BASED
from gavel.targets.params import NonNegativeFloat, PositiveFloat, PositiveInt


class Zoo(QueryAttack):
    threat_model = SCORE_BASED
    norm = "2"
    supports_targeted = True

    def __init__(
        self,
        *,
        eps: float,
        max_iter: PositiveInt = 100,
        nb_parallel: PositiveInt = 8,
        learning_rate: PositiveFloat = 0.05,
        initial_const: PositiveFloat = 100.0,
        binary_search_steps: PositiveInt = 1,
        confidence: NonNegativeFloat = 0.0,
        variable_h: PositiveFloat = 1e-4,
        abort_early: bool = False,
        **common,
    ) -> None:
        super().__init__(eps=eps, **common)
        self.max_iter = max_iter
        self.nb_parallel = nb_parallel
        self.learning_rate = learning_rate
        self.initial_const = initial_const
        self.binary_search_steps = binary_search_steps
        self.confidence = confidence
        self.variable_h = variable_h
        self.abort_early = abort_early

    def library_attack(self, estimator, budget):
        # Each iteration asks for 2 * nb_parallel finite-difference probes and the new iterate: an attacker
        # who knows its budget spreads it over the binary-search steps.
        nb_parallel = min(self.nb_parallel, int(np.prod(estimator.input_shape)))
        max_iter = self.max_iter
        if budget is not None:
            max_iter = min(max_iter, max(1, budget // (self.binary_search_steps * (2 * nb_parallel + 1))))
        return _BoxedZoo(
            estimator,
            confidence=self.confidence,
            targeted=self.targeted,
            learning_rate=self.learning_rate,
            max_iter=max_iter,
            binary_search_steps=self.binary_search_steps,
            initial_const=self.initial_const,
            abort_early=self.abort_early,
            # ART's resizing (to 32x32, then 64 and 128) and its importance sampling are for larger images
            use_resize=False,
            use_importance=False,
            nb_parallel=nb_parallel,
            variable_h=self.variable_h,
            verbose=False,
        )


class _BoxedZoo(ZooAttack):
    """ART's ZOO with the perturbation kept in the box, as in the paper.

    ART 1.20 adds its accumulated noise to the previous iterate instead of to the original (so the iterate
    drifts by the sum of every past noise), and clips the noise itself, not the image, to [0, 1] (so no pixel
    can get darker, and images leave [0, 1]). Here the iterate is original + noise, with the noise kept so the
    image stays in [0, 1]; finite-difference probes a step past the box are clipped, since the API takes
    images only.
    """

    def _generate_bss(self, x_batch, y_batch, c_batch):
        self._x_orig = x_batch.reshape(-1)
        return super()._generate_bss(x_batch, y_batch, c_batch)

    def _optimizer(self, x, targets, c_batch):
        return super()._optimizer(self._x_orig.reshape(x.shape), targets, c_batch)

    def _optimizer_adam_coordinate(self, losses, index, mean, var, current_noise, learning_rate, adam_epochs, proj):
        noise = (
            super()
            ._optimizer_adam_coordinate(losses, index, mean, var, current_noise, learning_rate, adam_epochs, proj=False)
            .reshape(-1)
        )
        noise[index] = np.clip(noise[index], -self._x_orig[index], 1.0 - self._x_orig[index])
        return noise.reshape(current_noise.shape)

    def _loss(self, x, x_adv, target, c_weight):
        return super()._loss(x, np.clip(x_adv, 0.0, 1.0), target, c_weight)
