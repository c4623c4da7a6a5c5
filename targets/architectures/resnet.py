"""A torchvision ResNet (random init) adapted to small images: a 3x3 stride-1 stem, no max-pool."""

from __future__ import annotations

from typing import Literal

from torch import nn

from gavel.targets.architectures.base import Architecture

ResNetName = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


class SmallImageResNet(Architecture):
    def __init__(self, *, name: ResNetName = "resnet18") -> None:
        self.name = name

    def build(self, input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
        import torchvision

        net = torchvision.models.get_model(self.name, weights=None, num_classes=n_classes)
        net.conv1 = nn.Conv2d(input_shape[0], net.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        return net
