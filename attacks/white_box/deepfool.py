"""DeepFool (Moosavi-Dezfooli et al., 2016), minimum-norm L2 on the judge itself: white box, from ART.

DeepFool walks to the nearest decision boundary with no eps of its own; what it finds is projected onto the
eps-ball, and the runner's re-check says whether that still fools the judge.
"""

from __future__ import annotations

import numpy as np
from art.attacks.evasion import DeepFool as ArtDeepFool

from gavel.attacks.base import AttackerKit
from gavel.attacks.white_box.base import BATCH_SIZE, WhiteBoxAttack
from gavel.targets.params import NonNegativeFloat, PositiveInt


class DeepFool(WhiteBoxAttack):
    norm = "2"

    def __init__(
        self, *, eps: float = 1.0, max_iter: PositiveInt = 50, overshoot: NonNegativeFloat = 0.02, **common
    ) -> None:
        super().__init__(eps=eps, **common)
        self.max_iter = max_iter
        self.overshoot = overshoot

    def craft(self, estimator, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> np.ndarray:
        attack = ArtDeepFool(
            estimator,
            max_iter=self.max_iter,
            epsilon=self.overshoot,
            nb_grads=estimator.nb_classes,
            batch_size=BATCH_SIZE,
            verbose=False,
        )
        # DeepFool leaves the verdict the judge gives, which is `y`: the runner attacks only where it is right
        return self.project(attack.generate(x), x)
