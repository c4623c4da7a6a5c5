"""The served model behind a preprocessing transform (`defenses/preprocessing/`), and the view of it an adaptive
white-box attacker builds: BPDA (Athalye, Carlini & Wagner, 2018), the transform's backward pass replaced by the
identity while its forward pass, and so every verdict, stays the same."""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
from torch import nn


class Transform(nn.Module):
    """A preprocessing transform on inputs in [0, 1] (N, C, H, W), returning the same shape in [0, 1]."""

    differentiable: ClassVar[bool] = False
    """Whether a white-box attacker's gradients through it are useful as they are."""


class Preprocessed(nn.Module):
    """The judge behind a transform. With `straight_through` (the BPDA view an adaptive attacker builds of it) the
    forward pass is the same, and the backward pass treats the transform as the identity."""

    def __init__(self, judge: nn.Module, transform: Transform) -> None:
        super().__init__()
        self.judge = judge
        self.transform = transform
        self.straight_through = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.straight_through:
            with torch.no_grad():
                moved = self.transform(x) - x
            return self.judge(x + moved)  # the value of transform(x); the gradient of the identity
        return self.judge(self.transform(x))


def masks_gradients(model: nn.Module) -> bool:
    """Whether `model` holds a transform whose gradients are useless without BPDA."""
    return any(isinstance(m, Preprocessed) and not m.transform.differentiable for m in model.modules())


def straight_through(model: nn.Module) -> nn.Module:
    """BPDA (Athalye et al., 2018): a copy of the served model whose every preprocessing transform passes the
    gradient through as the identity; the forward pass, and so every verdict it gives, is unchanged. The copy is the
    attacker's: the model the Oracle serves is left as it is."""
    view = copy.deepcopy(model)
    for module in view.modules():
        if isinstance(module, Preprocessed):
            module.straight_through = True
    return view
