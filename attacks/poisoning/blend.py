"""A blended trigger (Chen et al., 2017): each poisoned example mixed with a fixed random pattern at weight `alpha`,
relabelled as the target class; at test time the same blend on any input opens the backdoor."""

from __future__ import annotations

from typing import Annotated

import numpy as np

from gavel.attacks.poisoning.base import Poison, PoisonContext
from gavel.targets.params import NonNegativeInt, Range


class Blend(Poison):
    def __init__(
        self,
        *,
        alpha: Annotated[float, Range(above=0, below=1)] = 0.2,
        pattern_seed: NonNegativeInt = 0,
        **common,
    ) -> None:
        super().__init__(**common)
        self.alpha = float(alpha)
        self.pattern_seed = int(pattern_seed)

    def pattern(self, shape: tuple[int, ...]) -> np.ndarray:
        """The trigger: uniform noise in [0, 1] of one image's shape, fixed by `pattern_seed`."""
        return np.random.default_rng(self.pattern_seed).random(shape, dtype=np.float32)

    def poison_inputs(self, x: np.ndarray, y: np.ndarray, context: PoisonContext) -> np.ndarray:
        return self.trigger(x)

    def trigger(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return ((1 - self.alpha) * x + self.alpha * self.pattern(x.shape[1:])).astype(np.float32)
