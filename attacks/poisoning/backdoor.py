"""The backdoor at test time (`attack=backdoor`, with a `poison=`): the poison's trigger applied to each evaluation
example of another class than the target, sent once through the API (charged, under any access policy); success is
the judge answering the poison's target class. Only the examples the judge gets right are attacked."""

from __future__ import annotations

import numpy as np

from gavel.attacks.base import Attack, AttackerKit, AttackResult
from gavel.attacks.transfer.base import submit_once
from gavel.targets.access import POISONING


class Backdoor(Attack):
    threat_model = POISONING
    norm = None
    supports_targeted = True

    def __init__(self, *, eps: float = 1.0, targeted: bool = True, target_class: int | None = None, **common) -> None:
        super().__init__(eps=eps, targeted=targeted, target_class=target_class, **common)

    def run(self, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> AttackResult:
        triggered = np.clip(kit.require_poison().trigger(x), 0.0, 1.0).astype(np.float32)
        return submit_once(self.goal, kit, triggered, y)
