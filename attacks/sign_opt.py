"""Sign-OPT (Cheng et al., 2020), decision-based, L2, from ART."""
from __future__ import annotations

import numpy as np
from art.attacks.evasion import SignOPTAttack

from attacks.query_attack import QueryAttack


class SignOPT(QueryAttack):
    threat_model = "decision_based"
    norm = "2"
    supports_targeted = True
    needs_attacker_data = True  # targeted: its own images of the target class give the first directions

    def __init__(
        self,
        *,
        eps: float,
        max_iter: int = 1000,
        query_limit: int = 20000,
        num_trial: int = 10,
        k: int = 30,
        alpha: float = 0.2,
        beta: float = 0.001,
        smoothing: float = 0.001,
        **common,
    ) -> None:
        super().__init__(eps=eps, **common)
        self.max_iter = max_iter
        self.query_limit = query_limit
        self.num_trial = num_trial
        self.k = k
        self.alpha = alpha
        self.beta = beta
        self.smoothing = smoothing
        self._target_images: np.ndarray | None = None

    def run(self, client, x, y, *, attacker_data=None, **kwargs):
        if self.targeted:
            if attacker_data is None:
                raise ValueError("targeted Sign-OPT starts from the attacker's own images of the target class")
            self._target_images = attacker_data.x[attacker_data.y == self.target_class]
        return super().run(client, x, y, attacker_data=attacker_data, **kwargs)

    def art_attack(self, estimator, budget):
        # ART stops once an iteration ends past query_limit: the attacker sets it to the budget it has.
        return SignOPTAttack(
            estimator,
            targeted=self.targeted,  # ART's default is targeted
            epsilon=self.smoothing,
            num_trial=self.num_trial,
            max_iter=self.max_iter,
            query_limit=self.query_limit if budget is None else min(self.query_limit, budget),
            k=self.k,
            alpha=self.alpha,
            beta=self.beta,
            verbose=False,
        )

    def generate(self, attack, x, y, adversarial):
        if not self.targeted:
            return attack.generate(x, y=y)
        # ART tries these in order, a query each to keep those the judge labels as the target.
        return attack.generate(x, y=y, x_init=self._target_images)
