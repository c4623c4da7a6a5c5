"""HopSkipJump (Chen et al., 2020), decision-based, from ART or foolbox."""

from __future__ import annotations

import numpy as np
from art.attacks.evasion import HopSkipJump as ArtHopSkipJump
from foolbox.attacks import HopSkipJumpAttack, LinearSearchBlendedUniformNoiseAttack

from attacks.adapters import foolbox as foolbox_adapter
from attacks.adapters.art import SeededInitialSample
from attacks.params import PositiveInt
from attacks.query.base import QueryAttack
from targets.access import DECISION_BASED

FOOLBOX_BLEND_STEPS = 50
"""foolbox's own HopSkipJump start: the first of this many blends towards random noise that fools the judge."""


class HopSkipJump(QueryAttack):
    threat_model = DECISION_BASED
    supports_targeted = True
    start = "adversarial"

    def __init__(
        self,
        *,
        eps: float,
        max_iter: PositiveInt = 50,
        max_eval: PositiveInt = 1000,
        init_eval: PositiveInt = 100,
        init_size: PositiveInt = 100,
        backend: foolbox_adapter.Backend = "art",
        **common,
    ) -> None:
        super().__init__(eps=eps, **common)
        self.max_iter = max_iter
        self.max_eval = max_eval
        self.init_eval = init_eval
        self.init_size = init_size
        self.backend = foolbox_adapter.check_backend(backend)

    def library_attack(self, estimator, budget):
        # HopSkipJump minimises the perturbation with no eps of its own: it runs until max_iter or the
        # budget stops it, and succeeds once any input it queries lies within eps and fools the judge.
        if self.backend == "foolbox":
            return foolbox_adapter.FoolboxQueryAttack(
                foolbox_adapter.OracleModel(estimator.predict),
                HopSkipJumpAttack(
                    steps=self.max_iter,
                    initial_gradient_eval_steps=self.init_eval,
                    max_gradient_eval_steps=self.max_eval,
                    constraint="linf",
                ),
                targeted=self.targeted,
                init_attack=LinearSearchBlendedUniformNoiseAttack(directions=self.init_size, steps=FOOLBOX_BLEND_STEPS),
            )
        return _SeededHopSkipJump(
            estimator,
            targeted=self.targeted,
            norm=np.inf,
            max_iter=self.max_iter,
            max_eval=self.max_eval,
            init_eval=self.init_eval,
            init_size=self.init_size,
            verbose=False,
        )


class _SeededHopSkipJump(SeededInitialSample, ArtHopSkipJump):
    pass
