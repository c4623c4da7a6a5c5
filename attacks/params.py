"""Types for attack hyperparameters. An attack declares each hyperparameter in its `__init__` signature with
one of these (or a plain `bool`, `str`, `Literal[...]`, `X | None`); the config boundary in `experiments/`
reads the signature and checks every value's type and range before anything runs."""

from __future__ import annotations

import inspect
import math
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Iterable


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


def declared_hyperparameters(classes: Iterable[type]) -> dict[str, Any]:
    """Each keyword-only `__init__` parameter along `classes` and the type it is declared with, the first
    declaration winning (`seed` is the experiment's, not a hyperparameter)."""
    found: dict[str, Any] = {}
    for klass in classes:
        if "__init__" not in vars(klass) or klass is object:
            continue
        hints = typing.get_type_hints(klass.__init__, include_extras=True)
        for name, p in inspect.signature(klass.__init__).parameters.items():
            if p.kind is p.KEYWORD_ONLY and name != "seed" and name not in found:
                found[name] = hints.get(name, Any)
    return found


PositiveInt = Annotated[int, Range(minimum=1)]
NonNegativeInt = Annotated[int, Range(minimum=0)]
PositiveFloat = Annotated[float, Range(above=0)]
NonNegativeFloat = Annotated[float, Range(minimum=0)]
Probability = Annotated[float, Range(minimum=0, maximum=1)]
