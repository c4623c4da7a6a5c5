"""Fast adversarial training (Wong, Rice & Kolter, 2020): one FGSM step of 1.25 eps from a uniform random start."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gavel.targets.robust.base import Adversarial


class FastFGSM(Adversarial):
    def __init__(self, eps: float, seed: int) -> None:
        super().__init__(eps, 1, seed)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gain = lambda logits: F.cross_entropy(logits, y)  # noqa: E731
        x_adv = self.ascend(model, x, self.uniform_start(x), gain, 1.25 * self.eps)
        return F.cross_entropy(model(x_adv), y)
