"""The architecture contract: hyperparameters in `__init__` (keyword-only, typed, checked at the config boundary),
an untrained network for an input shape and a class count from `build`, and `as_dict` for the model cache's key."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import nn

from gavel.targets.params import declared_hyperparameters


class Architecture(ABC):
    name: ClassVar[str]
    """What the model cache's key and the logs call the architecture (an option may set it per instance)."""

    def hyperparameters(self) -> dict:
        """Each declared hyperparameter and its value, as the config had it (sequences as lists)."""
        values = {key: getattr(self, key) for key in declared_hyperparameters(type(self).__mro__)}
        return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}

    def as_dict(self) -> dict:
        """The architecture as the model cache's key hashes it: its name and hyperparameters."""
        return {**self.hyperparameters(), "name": self.name}

    @abstractmethod
    def build(self, input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
        """An untrained network from inputs of `input_shape` (already normalised) to `n_classes` logits."""

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.as_dict() == self.as_dict()

    def __hash__(self) -> int:
        return hash((type(self), repr(sorted(self.as_dict().items()))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.hyperparameters().items())})"
