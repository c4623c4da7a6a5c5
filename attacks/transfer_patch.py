"""Universal adversarial patch trained on the attacker's surrogate (ART), then stuck on every evaluation example
and each submitted once through the Oracle."""
from __future__ import annotations

import numpy as np
from torch import nn

from attacks.art_adapter import surrogate_estimator
from attacks.base import AttackResult
from attacks.patch import Patch
from attacks.transfer_pgd import submit_once
from targets.datasets import Pool


class TransferPatch(Patch):
    threat_model = "transfer"
    needs_surrogate = True

    def run(
        self,
        client,
        x: np.ndarray,
        y: np.ndarray,
        *,
        surrogate: nn.Module | None = None,
        attacker_data: Pool | None = None,
    ) -> AttackResult:
        patch = self.train(surrogate_estimator(surrogate, client), attacker_data)
        return submit_once(self, client, self.stick(patch, x), y)
