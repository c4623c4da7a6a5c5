"""PGD L-inf (Madry et al., 2018) on the judge itself: the white-box threat model, from ART."""
from __future__ import annotations

import numpy as np
from art.attacks.evasion import ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier
from torch import nn

from attacks.art_adapter import seed_global_rngs, white_box_estimator
from attacks.base import Attack, AttackResult
from targets.oracle import Oracle


class PGD(Attack):
    threat_model = "white_box"

    def __init__(
        self, *, eps: float, eps_step: float = 0.01, max_iter: int = 40, num_random_init: int = 1, seed: int = 0
    ) -> None:
        super().__init__(eps=eps, seed=seed)
        self.eps_step = eps_step
        self.max_iter = max_iter
        self.num_random_init = num_random_init

    def craft(self, estimator: PyTorchClassifier, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        attack = ProjectedGradientDescent(
            estimator,
            norm=np.inf,
            eps=self.eps,
            eps_step=self.eps_step,
            max_iter=self.max_iter,
            num_random_init=self.num_random_init,
            batch_size=256,
            verbose=False,
        )
        seed_global_rngs(self.seed)
        return self.project(attack.generate(x, y=y), x)

    def run(self, oracle: Oracle, x: np.ndarray, y: np.ndarray, *, surrogate: nn.Module | None = None) -> AttackResult:
        # The attacker holds the weights: it evaluates the judge offline and sends the API nothing.
        return AttackResult(
            x_adv=self.craft(white_box_estimator(oracle), x, y),
            queries=np.zeros(len(x), dtype=np.int64),
            budget_exhausted=np.zeros(len(x), dtype=bool),
            queries_to_success=np.full(len(x), -1, dtype=np.int64),
        )
