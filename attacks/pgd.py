"""PGD L-inf (Madry et al., 2018) on the judge itself: the white-box threat model, from ART."""
from __future__ import annotations

import numpy as np
from art.attacks.evasion import ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier
from torch import nn

from attacks.art_adapter import seed_global_rngs, white_box_estimator
from attacks.base import Attack, AttackResult
from targets.datasets import Pool


def offline_result(x_adv: np.ndarray) -> AttackResult:
    """A result crafted without a single query: the attacker held the model it attacked."""
    n = len(x_adv)
    return AttackResult(
        x_adv=x_adv,
        queries=np.zeros(n, dtype=np.int64),
        budget_exhausted=np.zeros(n, dtype=bool),
        queries_to_success=np.full(n, -1, dtype=np.int64),
    )


class PGD(Attack):
    threat_model = "white_box"
    supports_targeted = True

    def __init__(
        self, *, eps: float, eps_step: float = 0.01, max_iter: int = 40, num_random_init: int = 1, **common
    ) -> None:
        super().__init__(eps=eps, **common)
        self.eps_step = eps_step
        self.max_iter = max_iter
        self.num_random_init = num_random_init

    def craft(self, estimator: PyTorchClassifier, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        attack = ProjectedGradientDescent(
            estimator,
            norm=np.inf if self.norm == "inf" else 2,
            eps=self.eps,
            eps_step=self.eps_step,
            max_iter=self.max_iter,
            num_random_init=self.num_random_init,
            targeted=self.targeted,
            batch_size=256,
            verbose=False,
        )
        seed_global_rngs(self.seed)
        return self.project(attack.generate(x, y=self.library_labels(y)), x)

    def run(
        self,
        client,
        x: np.ndarray,
        y: np.ndarray,
        *,
        surrogate: nn.Module | None = None,
        attacker_data: Pool | None = None,
    ) -> AttackResult:
        return offline_result(self.craft(white_box_estimator(client), x, y))
