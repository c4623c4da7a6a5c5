"""Activation clustering (Chen et al., 2018): per class, the judge's penultimate activations of its training examples,
reduced to `dims` principal components, split in two by k-means; poison forms a cluster of its own, so the smaller
one is removed where it holds less than `max_share` of the class (`analysis=relative_size`), or always
(`analysis=smaller`, ART's default)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from gavel.defenses.sanitise.base import Cleaned, SanitiseContext, Sanitiser, penultimate_features
from gavel.targets.params import PositiveInt, Probability


class ActivationClustering(Sanitiser):
    def __init__(
        self,
        *,
        dims: PositiveInt = 10,
        analysis: Literal["relative_size", "smaller"] = "relative_size",
        max_share: Probability = 0.35,
    ) -> None:
        self.dims = int(dims)
        self.analysis = analysis
        self.max_share = float(max_share)

    def flagged(self, features: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
        """Which examples fall in a class's suspicious cluster."""
        flags = np.zeros(len(labels), dtype=bool)
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)
            if len(rows) < 2:
                continue
            reduced = PCA(n_components=min(self.dims, len(rows), features.shape[1]), random_state=seed).fit_transform(
                features[rows]
            )
            clusters = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(reduced)
            smaller = int(np.argmin(np.bincount(clusters, minlength=2)))
            share = float(np.mean(clusters == smaller))
            if self.analysis == "smaller" or share < self.max_share:
                flags[rows[clusters == smaller]] = True
        return flags

    def clean(self, context: SanitiseContext) -> Cleaned:
        features = penultimate_features(context.judge, context.pool.x, context.device)
        return Cleaned(kept=~self.flagged(features, context.pool.y, context.seed))
