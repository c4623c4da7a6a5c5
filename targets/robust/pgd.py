"""Madry et al. (2018): train on the PGD example of each batch, from a uniform random start, step 2.5 eps / steps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gavel.targets.robust.base import Adversarial


class MadryPGD(Adversarial):
    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gain = lambda logits: F.cross_entropy(logits, y)  # noqa: E731
        x_adv = self.ascend(model, x, self.uniform_start(x), gain, 2.5 * self.eps / self.steps)
        return F.cross_entropy(model(x_adv), y)
