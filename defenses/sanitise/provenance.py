"""Provenance (Baracaldo et al., 2017; ART's ProvenanceDefense in spirit): a detector flags examples (`detector`:
activation clustering or spectral signatures, at their defaults), and every example of a contributor whose flagged
share passes `threshold` is removed: a contributor found poisoning loses all it contributed."""

from __future__ import annotations

from typing import Literal

import numpy as np

from gavel.defenses.sanitise.activation_clustering import ActivationClustering
from gavel.defenses.sanitise.base import Cleaned, SanitiseContext, Sanitiser, penultimate_features
from gavel.defenses.sanitise.spectral_signatures import SpectralSignatures
from gavel.targets.params import Probability


class Provenance(Sanitiser):
    needs_contributors = True

    def __init__(
        self,
        *,
        detector: Literal["activation_clustering", "spectral_signatures"] = "spectral_signatures",
        threshold: Probability = 0.1,
    ) -> None:
        self.detector = detector
        self.threshold = float(threshold)

    def clean(self, context: SanitiseContext) -> Cleaned:
        features = penultimate_features(context.judge, context.pool.x, context.device)
        if self.detector == "activation_clustering":
            flags = ActivationClustering().flagged(features, context.pool.y, context.seed)
        else:
            flags = SpectralSignatures().flagged(features, context.pool.y)
        kept = np.ones(len(context.pool), dtype=bool)
        for party in range(context.parties):
            rows = context.contributors == party
            if rows.any() and flags[rows].mean() > self.threshold:
                kept[rows] = False
        return Cleaned(kept=kept)
