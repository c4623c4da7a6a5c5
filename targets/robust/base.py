"""The per-batch hook of gavel's `Trainer`: an objective turns a batch into the loss the step minimises.

The natural objective is today's recipe (the cross-entropy of the batch as it is); the adversarial ones craft an
L-inf perturbation of the batch on the model being trained, within `target.train.eps`, and train on it. Crafting
draws its random starts from a generator of its own (seeded by the model's seed), never from torch's global one,
and runs with the model in eval mode (batch norm's statistics are not moved by the crafted inputs); the step runs in
training mode.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn


class Objective(ABC):
    @abstractmethod
    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch's loss (the model in training mode when called, and when it returns)."""


class Natural(Objective):
    """The cross-entropy of the batch as it is."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y)


class Adversarial(Objective):
    """Crafting within `eps` (L-inf, inputs in [0, 1]) in `steps` signed-gradient steps."""

    def __init__(self, eps: float, steps: int, seed: int) -> None:
        self.eps = float(eps)
        self.steps = int(steps)
        self.generator = torch.Generator().manual_seed(int(seed) + 7919)  # not the shuffling's stream

    def uniform_start(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(x.shape, generator=self.generator).to(x.device)
        return (x + (2 * noise - 1) * self.eps).clamp(0, 1)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0, 1)

    def ascend(self, model: nn.Module, x: torch.Tensor, start: torch.Tensor, gain, step: float) -> torch.Tensor:
        """`steps` signed-gradient steps of size `step` from `start` up `gain(logits)`, the model in eval mode."""
        model.eval()
        x_adv = start.detach()
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(gain(model(x_adv)), x_adv)
            x_adv = self.project(x_adv.detach() + step * grad.sign(), x)
        model.train()
        return x_adv.detach()
