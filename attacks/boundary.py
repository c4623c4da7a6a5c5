"""Boundary attack (Brendel et al., 2018), decision-based, L2, from ART."""
from __future__ import annotations

import numpy as np
from art.attacks.evasion import BoundaryAttack

from attacks.art_adapter import seeded_random_states
from attacks.query_attack import QueryAttack


class Boundary(QueryAttack):
    threat_model = "decision_based"
    norm = "2"
    supports_targeted = True
    start = "adversarial"
    needs_attacker_data = True  # targeted: it starts from one of its own images of the target class

    def __init__(
        self,
        *,
        eps: float,
        max_iter: int = 5000,
        delta: float = 0.01,
        epsilon: float = 0.01,
        step_adapt: float = 0.667,
        num_trial: int = 25,
        sample_size: int = 5,
        init_size: int = 100,
        **common,
    ) -> None:
        super().__init__(eps=eps, **common)
        self.max_iter = max_iter
        self.delta = delta
        self.epsilon = epsilon
        self.step_adapt = step_adapt
        self.num_trial = num_trial
        self.sample_size = sample_size
        self.init_size = init_size
        self._target_images: np.ndarray | None = None

    def run(self, client, x, y, *, attacker_data=None, **kwargs):
        if self.targeted and attacker_data is not None:
            self._target_images = attacker_data.x[attacker_data.y == self.target_class]
        return super().run(client, x, y, attacker_data=attacker_data, **kwargs)

    def art_attack(self, estimator, budget):
        # Like HopSkipJump, the Boundary attack shrinks the perturbation with no eps of its own: it succeeds
        # once an input it queries fools the judge within eps.
        return _SeededBoundary(
            estimator,
            targeted=self.targeted,  # ART's default is targeted
            max_iter=self.max_iter,
            delta=self.delta,
            epsilon=self.epsilon,
            step_adapt=self.step_adapt,
            num_trial=self.num_trial,
            sample_size=self.sample_size,
            init_size=self.init_size,
            verbose=False,
        )

    def generate(self, attack, x, y, adversarial):
        # Uniform noise is seldom judged as one given class: a targeted attacker starts from its own image
        # of the target class (ART checks it with a query, and draws noise if the judge disagrees).
        if adversarial is None and self.targeted and self._target_images is not None and len(self._target_images):
            adversarial = self._target_images[np.random.randint(len(self._target_images))][None]
        return super().generate(attack, x, y, adversarial)


class _SeededBoundary(BoundaryAttack):
    """ART draws the random starting images from an unseeded `np.random.RandomState()`; here it is seeded
    from numpy's global generator, which the attack seeds per example."""

    def _init_sample(self, *args, **kwargs):
        with seeded_random_states():
            return super()._init_sample(*args, **kwargs)
