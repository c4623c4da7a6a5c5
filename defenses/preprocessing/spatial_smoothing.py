"""Spatial smoothing, Feature Squeezing's other squeezer (Xu, Evans & Qi, NDSS 2018): a `window` x `window`
median filter on each channel, the image's edges reflected. A median passes the gradient to one pixel of each
window, so white-box gradients are sparse rather than zero: BPDA still helps. ART's `SpatialSmoothing` (scipy's
median filter) computes the same (tested)."""

from __future__ import annotations

from typing import Annotated

import torch

from gavel.defenses.preprocessing.base import PreprocessingDefense, Transform
from gavel.targets.params import Range


def symmetric_pad(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """Pad `dim` by reflecting the edge itself in (d c b a | a b c d | d c b a): scipy's "reflect" mode."""
    parts = [x.narrow(dim, 0, before).flip(dim)] if before else []
    parts.append(x)
    if after:
        parts.append(x.narrow(dim, x.shape[dim] - after, after).flip(dim))
    return torch.cat(parts, dim=dim)


class MedianFilter(Transform):
    def __init__(self, window: int) -> None:
        super().__init__()
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.window
        before, after = w // 2, (w - 1) // 2  # scipy's centring, for an even window too
        padded = symmetric_pad(symmetric_pad(x, before, after, 2), before, after, 3)
        patches = padded.unfold(2, w, 1).unfold(3, w, 1)  # N, C, H, W, w, w
        return patches.reshape(*patches.shape[:4], w * w).sort(dim=-1).values[..., (w * w) // 2]  # scipy's rank


class SpatialSmoothing(PreprocessingDefense):
    def __init__(self, *, window: Annotated[int, Range(minimum=2, maximum=7)] = 2) -> None:
        self.window = window
        self.check_hyperparameters()

    def transform(self) -> Transform:
        return MedianFilter(self.window)
