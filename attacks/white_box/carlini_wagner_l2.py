"""Carlini & Wagner L2 (2017), minimum-norm, on the judge itself: white box, from ART.

C&W minimises the L2 perturbation with no eps of its own; what it finds is projected onto the eps-ball, and
the runner's re-check says whether that still fools the judge.
"""

from __future__ import annotations

import numpy as np
from art.attacks.evasion import CarliniL2Method

from gavel.attacks.adapters.art import seed_global_rngs
from gavel.attacks.base import AttackerKit
from gavel.attacks.white_box.base import BATCH_SIZE, WhiteBoxAttack
from gavel.targets.params import NonNegativeFloat, PositiveFloat, PositiveInt


class CarliniWagnerL2(WhiteBoxAttack):
    norm = "2"
    supports_targeted = True

    def __init__(
        self,
        *,
        eps: float = 1.0,
        confidence: NonNegativeFloat = 0.0,
        learning_rate: PositiveFloat = 0.1,
        binary_search_steps: PositiveInt = 5,
        max_iter: PositiveInt = 10,
        initial_const: PositiveFloat = 1.0,
        **common,
    ) -> None:
        super().__init__(eps=eps, **common)
        self.confidence = confidence
        self.learning_rate = learning_rate
        self.binary_search_steps = binary_search_steps
        self.max_iter = max_iter
        self.initial_const = initial_const

    def craft(self, estimator, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> np.ndarray:
        attack = CarliniL2Method(
            estimator,
            confidence=self.confidence,
            targeted=self.targeted,
            learning_rate=self.learning_rate,
            binary_search_steps=self.binary_search_steps,
            max_iter=self.max_iter,
            initial_const=self.initial_const,
            batch_size=BATCH_SIZE,
            verbose=False,
        )
        seed_global_rngs(self.seed)
        return self.project(attack.generate(x, y=self.library_labels(y)), x)
