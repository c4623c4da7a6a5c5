"""Transfer attack MI-FGSM (Dong et al., 2018): momentum iterative FGSM L-inf crafted on the attacker's
surrogate (ART's PGD with `decay`), each result submitted once through the Oracle.

Momentum steadies the update direction across steps; Dong et al. find the result overfits the surrogate's
decision boundary less and transfers better than iterative FGSM's (on the digits CNN it does not beat PGD).
"""

from __future__ import annotations

from gavel.attacks.transfer.base import TransferAttack
from gavel.attacks.white_box.pgd import PGD
from gavel.targets.params import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt


class MomentumPGD(PGD):
    """PGD with momentum on the gradient (MI-FGSM): ART's PGD with `decay`; foolbox has no momentum."""

    def __init__(
        self,
        *,
        eps: float,
        eps_step: PositiveFloat | None = None,
        max_iter: PositiveInt = 10,
        num_random_init: NonNegativeInt = 0,
        decay: NonNegativeFloat = 1.0,
        **common,
    ) -> None:
        # None: eps / max_iter, so the steps add up to eps (Dong et al., 2018), whatever eps is
        eps_step = eps / max(max_iter, 1) if eps_step is None else eps_step
        super().__init__(eps=eps, eps_step=eps_step, max_iter=max_iter, num_random_init=num_random_init, **common)
        if self.backend != "art":
            raise ValueError(f"attack.backend={self.backend!r}: MI-FGSM needs momentum; allowed: art")
        self.decay = decay


class TransferMIFGSM(TransferAttack):
    crafter_class = MomentumPGD
