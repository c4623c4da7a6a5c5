"""FGSM (Goodfellow et al., 2015): one signed-gradient step on the judge itself, white box, from ART."""

from __future__ import annotations

import numpy as np
from art.attacks.evasion import FastGradientMethod

from gavel.attacks.adapters.art import seed_global_rngs
from gavel.attacks.base import AttackerKit
from gavel.attacks.white_box.base import BATCH_SIZE, WhiteBoxAttack


class FGSM(WhiteBoxAttack):
    supports_targeted = True

    def craft(self, estimator, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> np.ndarray:
        attack = FastGradientMethod(estimator, norm=np.inf, eps=self.eps, targeted=self.targeted, batch_size=BATCH_SIZE)
        seed_global_rngs(self.seed)
        return self.project(attack.generate(x, y=self.library_labels(y)), x)
