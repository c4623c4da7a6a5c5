"""Label flipping: the poisoned examples keep their inputs and are relabelled as the target class. There is no
trigger: at test time the "backdoor" is the clean input itself, judged as the target class."""

from __future__ import annotations

import numpy as np

from gavel.attacks.poisoning.base import Poison, PoisonContext


class LabelFlip(Poison):
    def poison_inputs(self, x: np.ndarray, y: np.ndarray, context: PoisonContext) -> np.ndarray:
        return x

    def trigger(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)
