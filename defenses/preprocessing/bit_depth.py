"""Bit-depth reduction, the squeezer of Feature Squeezing (Xu, Evans & Qi, NDSS 2018): each pixel rounded to
`bits` bits, (2^bits - 1) levels in [0, 1]. Its gradient is zero almost everywhere: plain PGD stalls on it, PGD
with BPDA does not. ART's `FeatureSqueezing` computes the same (tested)."""

from __future__ import annotations

from typing import Annotated

import torch

from gavel.defenses.preprocessing.base import PreprocessingDefense, Transform
from gavel.targets.params import Range


class Squeeze(Transform):
    def __init__(self, bits: int) -> None:
        super().__init__()
        self.levels = 2**bits - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * self.levels) / self.levels


class BitDepth(PreprocessingDefense):
    def __init__(self, *, bits: Annotated[int, Range(minimum=1, maximum=8)] = 2) -> None:
        self.bits = bits
        self.check_hyperparameters()

    def transform(self) -> Transform:
        return Squeeze(self.bits)
