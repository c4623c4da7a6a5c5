"""A multi-layer perceptron over the flattened image."""

from __future__ import annotations

import math
from typing import Sequence

from torch import nn

from gavel.targets.architectures.base import Architecture
from gavel.targets.params import PositiveInt


class MLP(Architecture):
    name = "mlp"

    def __init__(self, *, hidden: Sequence[PositiveInt] = (256, 256)) -> None:
        self.hidden = tuple(int(size) for size in hidden)

    def build(self, input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
        n_inputs = math.prod(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for size in self.hidden:
            layers += [nn.Linear(n_inputs, size), nn.ReLU()]
            n_inputs = size
        layers.append(nn.Linear(n_inputs, n_classes))
        return nn.Sequential(*layers)
