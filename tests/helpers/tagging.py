"""A judge that writes down which example every row it evaluates belongs to: the example's key is encoded in
pixel (0, 0, 0) of the row itself, so the Oracle's counts can be checked against an independent count of what
the judge evaluated."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gavel.targets.access import AccessPolicy, Oracle

SHAPE = (1, 4, 4)
N_CLASSES = 5


class TaggingJudge(nn.Module):
    """A fixed linear judge that records the example key written in pixel (0, 0, 0) of each row it evaluates."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(16, N_CLASSES)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += torch.round(x[:, 0, 0, 0] * 100).long().tolist()
        return self.linear(x.flatten(1))


def rows_for(keys, rng: np.random.Generator) -> np.ndarray:
    x = rng.random((len(keys), *SHAPE), dtype=np.float32)
    x[:, 0, 0, 0] = np.asarray(keys, dtype=np.float32) / 100
    return x


def oracle(planned: int = 4, shield=None, **policy) -> tuple[TaggingJudge, Oracle]:
    judge = TaggingJudge()
    base = {"weights": "hidden", "output": "label", "budget": None}
    if shield is not None:
        shield = shield(judge)
    made = Oracle(judge, AccessPolicy(**{**base, **policy}), input_shape=SHAPE, n_classes=N_CLASSES, shield=shield)
    made.plan(planned)
    return judge, made
