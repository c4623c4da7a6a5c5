"""White-box attacks: crafted offline on the judge's own weights, so no query is sent.

`craft` is the whole attack given an ART estimator; a transfer attacker runs the same `craft` on its surrogate
(`attacks.transfer.base.TransferAttack` holds a white-box attack as its crafter).

Adaptive white-box attackers (Athalye, Carlini & Wagner, 2018) against a defended judge: `bpda=true` replaces each
non-differentiable preprocessing transform's backward pass with the identity (`targets.access.preprocessing.
straight_through`); `eot_samples=M` averages the served model's logits, and so its gradients, over M draws of a
randomised defense (Expectation over Transformation).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn

from gavel.attacks.adapters.art import white_box_estimator
from gavel.attacks.base import Attack, AttackerKit, AttackResult
from gavel.targets.access import WHITE_BOX
from gavel.targets.access.preprocessing import straight_through
from gavel.targets.params import PositiveInt

BATCH_SIZE = 256
ADAPTIVE = ("bpda", "eot_samples")
"""The hyperparameters that adapt a white-box attack to the served model's defenses (none for a transfer crafter,
which runs on the attacker's own surrogate)."""


class Expectation(nn.Module):
    """EOT: the mean of `samples` forward passes of a randomised model (fresh randomness in each), so that its
    gradient is the mean of theirs."""

    def __init__(self, model: nn.Module, samples: int) -> None:
        super().__init__()
        self.model = model
        self.samples = samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(x) for _ in range(self.samples)]).mean(dim=0)


class WhiteBoxAttack(Attack):
    threat_model = WHITE_BOX

    def __init__(self, *, bpda: bool = False, eot_samples: PositiveInt = 1, **common: Any) -> None:
        super().__init__(**common)
        self.bpda = bool(bpda)
        self.eot_samples = int(eot_samples)

    def attacked_model(self, served: nn.Module) -> nn.Module:
        """What the attacker differentiates: the served model, seen through BPDA and EOT where asked."""
        model = straight_through(served) if self.bpda else served
        return Expectation(model, self.eot_samples) if self.eot_samples > 1 else model

    @abstractmethod
    def craft(self, estimator: PyTorchClassifier, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> np.ndarray:
        """Adversarial inputs for `x` (true labels `y`) on `estimator`, within the attack's eps-ball; `kit` holds
        what else the attacker has (its own data, for a universal perturbation)."""

    def run(self, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> AttackResult:
        """Crafted on the judge as the operator serves it (its weights open; `AccessDenied` where hidden)."""
        return AttackResult.offline(self.craft(white_box_estimator(kit.client, self.attacked_model), x, y, kit))
