"""White-box attacks: crafted offline on the judge's own weights, so no query is sent.

`craft` is the whole attack given an ART estimator; a transfer attacker runs the same `craft` on its surrogate
(`attacks.transfer.base.TransferAttack` holds a white-box attack as its crafter).
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
from art.estimators.classification import PyTorchClassifier

from gavel.attacks.adapters.art import white_box_estimator
from gavel.attacks.base import Attack, AttackerKit, AttackResult
from gavel.targets.access import WHITE_BOX

BATCH_SIZE = 256


class WhiteBoxAttack(Attack):
    threat_model = WHITE_BOX

    @abstractmethod
    def craft(self, estimator: PyTorchClassifier, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> np.ndarray:
        """Adversarial inputs for `x` (true labels `y`) on `estimator`, within the attack's eps-ball; `kit` holds
        what else the attacker has (its own data, for a universal perturbation)."""

    def run(self, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> AttackResult:
        return AttackResult.offline(self.craft(white_box_estimator(kit.client), x, y, kit))
