"""Spectral signatures (Tran, Li & Madry, 2018): per class, the judge's penultimate activations centred, each
example scored by its projection on their top singular vector squared; poison leaves a trace there, so the
`multiplier` x `expected_fraction` of each class with the highest scores are removed (ART's defaults, 1.5 x 0.33,
cut half of every class)."""

from __future__ import annotations

from typing import Annotated

import numpy as np

from gavel.defenses.sanitise.base import Cleaned, SanitiseContext, Sanitiser, penultimate_features
from gavel.targets.params import PositiveFloat, Range


class SpectralSignatures(Sanitiser):
    def __init__(
        self,
        *,
        expected_fraction: Annotated[float, Range(above=0, below=1)] = 0.05,
        multiplier: PositiveFloat = 1.5,
    ) -> None:
        self.expected_fraction = float(expected_fraction)
        self.multiplier = float(multiplier)

    def flagged(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        flags = np.zeros(len(labels), dtype=bool)
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)
            if len(rows) < 2:
                continue
            centred = features[rows] - features[rows].mean(axis=0)
            top = np.linalg.svd(centred, full_matrices=False)[2][0]
            scores = (centred @ top) ** 2
            removed = min(len(rows), int(np.floor(self.multiplier * self.expected_fraction * len(rows))))
            if removed:
                flags[rows[np.argsort(-scores, kind="stable")[:removed]]] = True
        return flags

    def clean(self, context: SanitiseContext) -> Cleaned:
        features = penultimate_features(context.judge, context.pool.x, context.device)
        return Cleaned(kept=~self.flagged(features, context.pool.y))
