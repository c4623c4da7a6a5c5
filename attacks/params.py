"""Types for attack hyperparameters. An attack declares each hyperparameter in its `__init__` signature with
one of these (or a plain `bool`, `str`, `Literal[...]`, `X | None`); the config boundary in `experiments/`
reads the signature and checks every value's type and range before anything runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Range:
    """Bounds on a number: `minimum`/`maximum` inclusive, `above`/`below` exclusive."""

    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None
    below: float | None = None

    def holds(self, value: float) -> bool:
        return (
            math.isfinite(value)
            and (self.minimum is None or value >= self.minimum)
            and (self.above is None or value > self.above)
            and (self.maximum is None or value <= self.maximum)
            and (self.below is None or value < self.below)
        )

    def describe(self) -> str:
        low = (
            f"[{self.minimum:g}" if self.minimum is not None else (f"({self.above:g}" if self.above is not None else "")
        )
        high = (
            f"{self.maximum:g}]" if self.maximum is not None else (f"{self.below:g})" if self.below is not None else "")
        )
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f">= {self.minimum:g}" if self.minimum is not None else f"> {self.above:g}"
        return f"<= {self.maximum:g}" if self.maximum is not None else f"< {self.below:g}"


PositiveInt = Annotated[int, Range(minimum=1)]
NonNegativeInt = Annotated[int, Range(minimum=0)]
PositiveFloat = Annotated[float, Range(above=0)]
NonNegativeFloat = Annotated[float, Range(minimum=0)]
Probability = Annotated[float, Range(minimum=0, maximum=1)]
