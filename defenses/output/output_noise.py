"""Output noise: Gaussian noise of standard deviation `scale` added to every probability, negatives set to 0 and
each row renormalised, as ART's `GaussianNoise` does with probabilities. A randomised answer: asking the same
input twice can get two verdicts, which is what makes it a defense when the API returns labels only.

Written here because ART draws from numpy's global generator, which anything else in the process moves; this
filter draws from its own generator, seeded from the operator's seed, so a run is reproducible. ART's remains
the reference (`tests/unit/test_output_defenses.py` checks that the two agree).
"""

from __future__ import annotations

import zlib

import numpy as np

from gavel.defenses.base import OperatorKit
from gavel.defenses.output.base import OutputDefense
from gavel.defenses.output.labels_only import one_hot
from gavel.targets.access import Output
from gavel.targets.access.shield import OutputFilter
from gavel.targets.params import PositiveFloat

STREAM = zlib.crc32(b"defense.output_noise")
"""Mixed into the seed: the same seed also draws the evaluation examples and the attacks' randomness."""


class OutputNoise(OutputDefense):
    outputs = (Output.PROBABILITIES, Output.LABEL)  # the label is the verdict of the noisy scores: randomised

    def __init__(self, *, scale: PositiveFloat = 0.2) -> None:
        self.scale = scale
        super().__init__()

    def output_filter(self, operator: OperatorKit) -> OutputFilter:
        return GaussianNoiseFilter(self.scale, operator.seed)


class GaussianNoiseFilter(OutputFilter):
    """Fresh noise on every call, from a generator that starts at the seed in each deployment."""

    def __init__(self, scale: float, seed: int) -> None:
        self.scale = scale
        self.rng = np.random.default_rng([seed, STREAM])

    def __call__(self, probabilities: np.ndarray) -> np.ndarray:
        return add_noise(probabilities, self.rng.normal(0.0, self.scale, size=probabilities.shape))


def add_noise(probabilities: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """`probabilities` + `noise`, negatives set to 0, rows renormalised. A row whose noisy scores are all <= 0
    (possible once `scale` is near 1 / classes) would be 0 / 0 in ART; it is answered with the one-hot row of its
    highest noisy score, so the verdict is always the arg-max of the noisy scores."""
    noisy = probabilities.astype(np.float64) + noise
    kept = np.clip(noisy, 0.0, None)
    sums = kept.sum(axis=1, keepdims=True)
    answers = np.divide(kept, sums, out=np.zeros_like(kept), where=sums > 0)
    dead = sums[:, 0] == 0
    answers[dead] = one_hot(noisy[dead].argmax(axis=1), noisy.shape[1])
    return answers.astype(np.float32)
