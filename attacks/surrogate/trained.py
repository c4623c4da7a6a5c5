"""One surrogate model (`surrogate=cnn|mlp`): an architecture and a training recipe."""

from __future__ import annotations

from gavel.attacks.surrogate.base import Surrogate
from gavel.targets.architectures.base import Architecture
from gavel.targets.training import ModelConfig, Recipe


class TrainedSurrogate(Surrogate):
    def __init__(self, *, arch: Architecture, train: Recipe, **knowledge) -> None:
        super().__init__(**knowledge)
        self.model = ModelConfig(arch, train)

    @property
    def members(self) -> tuple[ModelConfig, ...]:
        return (self.model,)
