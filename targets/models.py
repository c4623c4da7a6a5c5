"""Judge architectures. Every model takes inputs in [0, 1] (NCHW) and normalises inside."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import nn


class ArchName(StrEnum):
    CNN = "cnn"
    MLP = "mlp"
    RESNET18 = "resnet18"


ARCHITECTURES = tuple(name.value for name in ArchName)


@dataclass(frozen=True)
class Architecture:
    """A `target.arch` / `surrogate.arch` node: the network's kind and its size (`width` for the CNN,
    `hidden` layer sizes for the MLP; the ResNet has neither)."""

    name: ArchName
    width: int | None = None
    hidden: tuple[int, ...] | None = None

    def as_dict(self) -> dict:
        """The fields that are set, as the config had them (the model cache's key hashes this)."""
        out: dict = {"name": self.name.value}
        if self.width is not None:
            out["width"] = self.width
        if self.hidden is not None:
            out["hidden"] = list(self.hidden)
        return out


class Normalize(nn.Module):
    """Per-channel standardisation; statistics live in buffers so they travel with the state dict."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    def fit(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(dim=(0, 2, 3), keepdim=True))
        self.std.copy_(x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Judge(nn.Module):
    """A classifier over [0, 1] inputs: normalisation followed by the network."""

    def __init__(self, net: nn.Module, channels: int) -> None:
        super().__init__()
        self.normalize = Normalize(channels)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def build_model(arch: Architecture, input_shape: tuple[int, ...], n_classes: int) -> Judge:
    """An untrained model of architecture `arch`."""
    channels, height, width = input_shape
    if arch.name == ArchName.CNN:
        net = _cnn(channels, arch.width, n_classes)
    elif arch.name == ArchName.MLP:
        net = _mlp(channels * height * width, list(arch.hidden), n_classes)
    else:
        net = _torchvision_resnet(arch.name.value, channels, n_classes)
    return Judge(net, channels)


def _cnn(channels: int, width: int, n_classes: int) -> nn.Module:
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


def _mlp(n_inputs: int, hidden: list[int], n_classes: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    for size in hidden:
        layers += [nn.Linear(n_inputs, size), nn.ReLU()]
        n_inputs = size
    layers.append(nn.Linear(n_inputs, n_classes))
    return nn.Sequential(*layers)


def _torchvision_resnet(name: str, channels: int, n_classes: int) -> nn.Module:
    """A torchvision ResNet adapted to small images: 3x3 stem, stride 1, no max-pool."""
    import torchvision

    net = torchvision.models.get_model(name, weights=None, num_classes=n_classes)
    net.conv1 = nn.Conv2d(channels, net.conv1.out_channels, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


class Ensemble(nn.Module):
    """Several models as one: the mean of their logits (Liu et al., 2017), for transfer from an ensemble."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)
