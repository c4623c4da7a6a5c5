"""Square attack (Andriushchenko et al., 2020), score-based, from ART."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from art.attacks.evasion import SquareAttack

from attacks.params import PositiveInt, Range
from attacks.query.base import QueryAttack
from targets.access import SCORE_BASED


class Square(QueryAttack):
    threat_model = SCORE_BASED
    start = "centre"

    def __init__(
        self,
        *,
        eps: float,
        max_iter: PositiveInt = 1000,
        p_init: Annotated[float, Range(above=0, maximum=1)] = 0.8,
        **common,
    ) -> None:
        super().__init__(eps=eps, **common)
        self.max_iter = max_iter
        self.p_init = p_init

    def library_attack(self, estimator, budget):
        # Square's square-size schedule is a fraction of max_iter: an attacker who knows its budget
        # plans for it (about one query per iteration once repeated inputs are not bought twice).
        max_iter = self.max_iter if budget is None else min(self.max_iter, budget)
        return SquareAttack(
            estimator, norm=np.inf, eps=self.eps, max_iter=max_iter, p_init=self.p_init, nb_restarts=1, verbose=False
        )
