"""A small CNN: three 3x3 convolutions, a 2x2 max-pool and a 2x2 average pool, two dense layers."""

from __future__ import annotations

from torch import nn

from gavel.targets.architectures.base import Architecture
from gavel.targets.params import PositiveInt


class SmallCNN(Architecture):
    name = "cnn"

    def __init__(self, *, width: PositiveInt = 32) -> None:
        self.width = int(width)

    def build(self, input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
        channels, width = input_shape[0], self.width
        return nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * width, 128),
            nn.ReLU(),
            nn.Linear(128, n_classes),
        )
