"""Boundary attack (Brendel et al., 2018), decision-based, L2, from ART."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from art.attacks.evasion import BoundaryAttack

from gavel.attacks.adapters.art import SeededInitialSample
from gavel.attacks.query.base import QueryAttack
from gavel.targets.access import DECISION_BASED
from gavel.targets.params import PositiveFloat, PositiveInt, Range


class Boundary(QueryAttack):
    threat_model = DECISION_BASED
    norm = "2"
    supports_targeted = True
    start = "adversarial"
    needs_attacker_data = True  # targeted: it starts from one of its own images of the target class

    def __init__(
        self,
        *,
        eps: float,
        max_iter: PositiveInt = 5000,
        delta: PositiveFloat = 0.01,
        epsilon: PositiveFloat = 0.01,
        step_adapt: Annotated[float, Range(above=0, below=1)] = 0.667,
        num_trial: PositiveInt = 25,
        sample_size: PositiveInt = 5,
        init_size: PositiveInt = 100,
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

    def library_attack(self, estimator, budget):
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

    def generate(self, attack, x, y, adversarial, kit):
        # Uniform noise is seldom judged as one given class: a targeted attacker starts from its own image
        # of the target class (ART checks it with a query, and draws noise if the judge disagrees).
        if adversarial is None and self.targeted and kit.attacker_data is not None:
            own = kit.attacker_data.x[kit.attacker_data.y == self.target_class]
            if len(own):
                adversarial = own[np.random.randint(len(own))][None]
        return super().generate(attack, x, y, adversarial, kit)


class _SeededBoundary(SeededInitialSample, BoundaryAttack):
    pass
