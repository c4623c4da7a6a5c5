"""Transfer attacks: weights hidden, so the attacker crafts on its own surrogate and submits each result once
through the API; the answer tells it whether the transfer worked.

A transfer attack holds a white-box attack as its crafter (`crafter_class`, built from the same
hyperparameters) and runs the crafter's `craft` on the surrogate, or on a view of it (`crafting_model`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from torch import nn

from gavel.attacks.adapters.art import surrogate_estimator
from gavel.attacks.base import Attack, AttackerKit, AttackResult, Goal
from gavel.attacks.white_box.base import ADAPTIVE, WhiteBoxAttack
from gavel.targets.access import TRANSFER, QueryRefused


def submit_once(goal: Goal, kit: AttackerKit, x_adv: np.ndarray, y: np.ndarray) -> AttackResult:
    """Send each crafted input to the API once; the answer tells the attacker whether it worked."""
    client = kit.client
    keys = kit.keys_for(len(x_adv))
    queries_to_success = np.full(len(x_adv), -1, dtype=np.int64)
    for i, key in enumerate(keys):
        if client.out_of_accounts:
            client.stop(key)
            continue
        try:
            answer = client.query(x_adv[i : i + 1], example=key)
        except QueryRefused:
            continue
        label = int(answer[0] if answer.ndim == 1 else answer[0].argmax())
        if goal.fooled([label], [y[i]])[0]:
            queries_to_success[i] = 1
    return AttackResult.charged(client, keys, x_adv, queries_to_success)


class TransferAttack(Attack):
    threat_model = TRANSFER
    crafter_class: ClassVar[type[WhiteBoxAttack]]
    """The white-box attack run on the surrogate; its norm and targeted mode are the transfer attack's."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "crafter_class" in vars(cls):
            cls.norm = cls.crafter_class.norm
            cls.supports_targeted = cls.crafter_class.supports_targeted
            cls.needs_attacker_data = cls.crafter_class.needs_attacker_data

    def __init__(self, **params) -> None:
        self.crafter = self.crafter_class(**params)
        crafter = self.crafter
        super().__init__(
            eps=crafter.eps, targeted=crafter.targeted, target_class=crafter.target_class, seed=crafter.seed
        )

    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """The crafter's, less BPDA and EOT: the surrogate is the attacker's own, with no defense to adapt to."""
        crafter = {k: v for k, v in cls.crafter_class.parameters().items() if k not in ADAPTIVE}
        return {**crafter, **super().parameters()}

    def crafting_model(self, surrogate: nn.Module) -> nn.Module:
        """The model the crafter's gradients come from: the surrogate itself, or a view of it."""
        return surrogate

    def run(self, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> AttackResult:
        model = self.crafting_model(kit.require_surrogate())
        x_adv = self.crafter.craft(surrogate_estimator(model, kit.client, kit.device), x, y, kit)
        return submit_once(self.goal, kit, x_adv, y)
