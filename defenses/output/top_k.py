"""Top-k scores: the k highest probabilities of each row kept as they are, every other class's set to 0.

Written here: ART's `HighConfidence` is a cutoff on the score, which keeps a varying number of classes (none
when no score reaches it). The kept scores are not renormalised, so they stay the judge's own probabilities.
Ties at the k-th score keep the lower class indices, as the arg-max does, so the verdict is always kept.
"""

from __future__ import annotations

import numpy as np

from gavel.defenses.base import OperatorKit
from gavel.defenses.output.base import PROBABILITIES_ONLY, OutputDefense
from gavel.targets.access.shield import OutputFilter
from gavel.targets.params import PositiveInt


class TopK(OutputDefense):
    outputs = PROBABILITIES_ONLY

    def __init__(self, *, k: PositiveInt = 1) -> None:
        self.k = k
        super().__init__()

    def output_filter(self, operator: OperatorKit) -> OutputFilter:
        if self.k >= operator.n_classes:
            raise ValueError(
                f"defense.k={self.k}: keeps every one of the judge's {operator.n_classes} classes, hiding nothing; "
                f"allowed: 1 to {operator.n_classes - 1}"
            )
        return TopKFilter(self.k)


class TopKFilter(OutputFilter):
    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, probabilities: np.ndarray) -> np.ndarray:
        # a stable sort of the negated scores ranks equal scores by class index, as np.argmax breaks ties
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, : self.k]
        kept = np.zeros_like(probabilities, dtype=np.float32)
        np.put_along_axis(kept, top, np.take_along_axis(probabilities, top, axis=1), axis=1)
        return kept
