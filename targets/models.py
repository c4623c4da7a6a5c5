"""The judges gavel trains: a network of any `Architecture` behind its own input normalisation. Every model takes
inputs in [0, 1] (NCHW) and normalises inside."""

from __future__ import annotations

import torch
from torch import nn

from gavel.targets.architectures.base import Architecture


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
    return Judge(arch.build(tuple(input_shape), n_classes), input_shape[0])


class Ensemble(nn.Module):
    """Several models as one: the mean of their logits (Liu et al., 2017), for transfer from an ensemble."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)
