"""Random noise defense (RND; Qin et al., NeurIPS 2021): Gaussian noise of scale `sigma` added to every input the
judge evaluates, fresh on every forward. A query attack's finite differences then read mostly noise, unless the
attacker averages several answers per point (EOT: `attack.eot_samples`), paying for every one.

The noisy judge is the model the operator serves: white-box attackers get it too (its gradients are then of a
random function), and every verdict, the evaluator's included, is a draw of it."""

from __future__ import annotations

import zlib
from typing import Annotated, ClassVar

import torch
from torch import nn

from gavel.defenses.base import Defense, OperatorKit
from gavel.targets.access.shield import Shield
from gavel.targets.params import Range


class NoisyInput(nn.Module):
    """The judge behind Gaussian input noise from its own seeded generator (reproducible run to run)."""

    def __init__(self, judge: nn.Module, sigma: float, seed: int) -> None:
        super().__init__()
        self.judge = judge
        self.sigma = sigma
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        generator = self._generators.get(x.device)
        if generator is None:
            generator = self._generators[x.device] = torch.Generator(device=x.device).manual_seed(self.seed)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return self.judge(x + self.sigma * noise)


class InputNoise(Defense):
    kind: ClassVar[str] = "randomised"

    def __init__(self, *, sigma: Annotated[float, Range(above=0, maximum=1)] = 0.02) -> None:
        self.sigma = sigma
        self.check_hyperparameters()

    def deploy(self, judge: nn.Module, operator: OperatorKit) -> Shield:
        seed = zlib.crc32(f"defense.input_noise.{operator.seed}".encode())  # its own stream, not the attack's
        return Shield(NoisyInput(judge, self.sigma, seed))
