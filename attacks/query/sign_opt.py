"""Sign-OPT (Cheng et al., 2020), decision-based, L2, from ART."""

from __future__ import annotations

from art.attacks.evasion import SignOPTAttack

from gavel.attacks.query.base import QueryAttack
from gavel.targets.access import DECISION_BASED
from gavel.targets.params import PositiveFloat, PositiveInt


class SignOPT(QueryAttack):
    threat_model = DECISION_BASED
    norm = "2"
    supports_targeted = True
    needs_attacker_data = True  # targeted: its own images of the target class give the first directions

    def __init__(
        self,
        *,
        eps: float,
        max_iter: PositiveInt = 1000,
        query_limit: PositiveInt = 20000,
        num_trial: PositiveInt = 10,
        k: PositiveInt = 30,
        alpha: PositiveFloat = 0.2,
        beta: PositiveFloat = 0.001,
        smoothing: PositiveFloat = 0.001,
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

    def library_attack(self, estimator, budget):
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

    def generate(self, attack, x, y, adversarial, kit):
        if not self.targeted:
            return attack.generate(x, y=y)
        # ART tries these in order, a query each to keep those the judge labels as the target.
        own = kit.require_attacker_data("targeted Sign-OPT starts from the attacker's own images of the target class")
        return attack.generate(x, y=y, x_init=own.x[own.y == self.target_class])
