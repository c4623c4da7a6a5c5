"""AutoAttack L-inf (Croce & Hein, 2020) on the judge itself: white box, from ART.

ART's AutoAttack keeps, per example, the first of its attacks that fools the judge within eps. Its default
list (APGD-CE and APGD-DLR with 5 restarts of 100 steps, DeepFool, Square with 5000 queries) takes minutes
on a CPU; here the list is the two APGD losses with few steps, which on the digits CNN reaches what the full
APGD schedule reaches. ART's `targeted` means "also try every other class", not forcing one verdict, so
this attack is untargeted only.
"""

from __future__ import annotations

from typing import Literal, Sequence, get_args

import numpy as np
from art.attacks.evasion import AutoAttack as ArtAutoAttack
from art.attacks.evasion import AutoProjectedGradientDescent

from gavel.attacks.adapters.art import seed_global_rngs
from gavel.attacks.base import AttackerKit
from gavel.attacks.white_box.base import BATCH_SIZE, WhiteBoxAttack
from gavel.targets.params import PositiveFloat, PositiveInt

Loss = Literal["cross_entropy", "difference_logits_ratio"]
LOSSES: tuple[str, ...] = get_args(Loss)


class AutoAttack(WhiteBoxAttack):
    def __init__(
        self,
        *,
        eps: float,
        eps_step: PositiveFloat | None = None,
        max_iter: PositiveInt = 20,
        nb_random_init: PositiveInt = 1,
        losses: Sequence[Loss] = LOSSES,
        **common,
    ) -> None:
        super().__init__(eps=eps, **common)
        self.eps_step = 2 * self.eps if eps_step is None else eps_step
        self.max_iter = max_iter
        self.nb_random_init = nb_random_init
        self.losses = tuple(losses)
        unknown = [loss for loss in self.losses if loss not in LOSSES]
        if unknown or not self.losses:
            raise ValueError(f"attack.losses={list(self.losses)}: allowed: one or more of {', '.join(LOSSES)}")

    def craft(self, estimator, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> np.ndarray:
        apgd = [
            AutoProjectedGradientDescent(
                estimator,
                norm=np.inf,
                eps=self.eps,
                eps_step=self.eps_step,
                max_iter=self.max_iter,
                nb_random_init=self.nb_random_init,
                loss_type=loss,
                batch_size=BATCH_SIZE,
                verbose=False,
            )
            for loss in self.losses
        ]
        attack = ArtAutoAttack(
            estimator, norm=np.inf, eps=self.eps, eps_step=self.eps_step, attacks=apgd, batch_size=BATCH_SIZE
        )
        seed_global_rngs(self.seed)
        return self.project(attack.generate(x, y=y), x)
