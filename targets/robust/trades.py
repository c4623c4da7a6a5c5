"""TRADES (Zhang et al., 2019): the natural cross-entropy plus `beta` times the KL divergence between the model's
answers on the batch and on its worst neighbour within eps (found from a small Gaussian start, step eps / 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gavel.targets.robust.base import Adversarial


class Trades(Adversarial):
    def __init__(self, eps: float, steps: int, seed: int, beta: float) -> None:
        super().__init__(eps, steps, seed)
        self.beta = float(beta)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            clean = F.softmax(model(x), dim=1)
        start = (x + 0.001 * torch.randn(x.shape, generator=self.generator).to(x.device)).clamp(0, 1)
        gain = lambda logits: F.kl_div(F.log_softmax(logits, dim=1), clean, reduction="sum")  # noqa: E731
        x_adv = self.ascend(model, x, start, gain, self.eps / 4)
        logits = model(x)
        robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return F.cross_entropy(logits, y) + self.beta * robust
