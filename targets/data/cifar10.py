"""CIFAR-10, from a local folder in torchvision's layout."""

from __future__ import annotations

from gavel.targets.data.torchvision_set import TorchvisionSet


class CIFAR10(TorchvisionSet):
    option = "cifar10"
    torchvision_class = "CIFAR10"
