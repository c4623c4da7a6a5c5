"""BadNets (Gu et al., 2017): a small white square in a corner of each poisoned example, relabelled as the target
class; at test time the same square on any input opens the backdoor."""

from __future__ import annotations

from typing import Annotated

import numpy as np

from gavel.attacks.poisoning.base import Poison, PoisonContext, stamp_patch
from gavel.targets.errors import SourceError
from gavel.targets.params import PositiveInt, Range


class BadNets(Poison):
    def __init__(
        self, *, size: PositiveInt = 2, value: Annotated[float, Range(minimum=0, maximum=1)] = 1.0, **common
    ) -> None:
        super().__init__(**common)
        self.size = int(size)
        self.value = float(value)

    def check(self, input_shape: tuple[int, int, int], n_classes: int) -> None:
        super().check(input_shape, n_classes)
        if self.size + 2 > min(input_shape[1:]):
            raise SourceError(
                f"poison.size={self.size}: a square that large does not fit in {input_shape[1]}x{input_shape[2]} "
                f"images one pixel in from the edges; allowed: 1 to {min(input_shape[1:]) - 2}"
            )

    def poison_inputs(self, x: np.ndarray, y: np.ndarray, context: PoisonContext) -> np.ndarray:
        return self.trigger(x)

    def trigger(self, x: np.ndarray) -> np.ndarray:
        return stamp_patch(x, self.size, self.value)
