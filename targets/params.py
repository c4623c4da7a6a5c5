"""Types for attack hyperparameters. An attack declares each hyperparameter in its `__init__` signature with
one of these (or a plain `bool`, `str`, `Literal[...]`, `X | None`); the config boundary in `experiments/`
reads the signature and checks every value's type and range before anything runs."""

from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Iterable, Literal, Mapping, Union


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
            f"[{_num(self.minimum)}"
            if self.minimum is not None
            else (f"({_num(self.above)}" if self.above is not None else "")
        )
        high = (
            f"{_num(self.maximum)}]"
            if self.maximum is not None
            else (f"{_num(self.below)})" if self.below is not None else "")
        )
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f">= {_num(self.minimum)}" if self.minimum is not None else f"> {_num(self.above)}"
        return f"<= {_num(self.maximum)}" if self.maximum is not None else f"< {_num(self.below)}"


def _num(value: float) -> str:
    """A bound as people write it: whole numbers in full (a seed's 4294967295, not 4.29497e+09)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


SEED_MAX = 2**32 - 1
"""Seeds reach numpy's legacy generator in some attack libraries, which takes 32 bits."""


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


class BadValue(ValueError):
    """A value a component's own checks refuse (a door's `__init__`, beyond what its declared types say), named by its
    key relative to the component's node: the config boundary prefixes the node's dotted path, so the one-line error
    reads `target.arch.name='vit': not a torchvision ResNet; allowed: resnet18, resnet34, ...`."""

    def __init__(self, key: str, value, allowed: str, why: str = "") -> None:
        self.key, self.value, self.allowed, self.why = key, value, allowed, why
        super().__init__(f"{key}={value!r}: {why + '; ' if why else ''}allowed: {allowed}")

    def at(self, path: str) -> str:
        """The message with the key's full dotted path."""
        return f"{path}.{self}" if path else str(self)


PositiveInt = Annotated[int, Range(minimum=1)]
NonNegativeInt = Annotated[int, Range(minimum=0)]
PositiveFloat = Annotated[float, Range(above=0)]
NonNegativeFloat = Annotated[float, Range(minimum=0)]
Probability = Annotated[float, Range(minimum=0, maximum=1)]


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def conforms(value, hint) -> bool:
    """Whether `value` has the declared type `hint` (bool, int, float, str, Literal, Sequence, Mapping, `X | None`,
    and `Annotated[..., Range]`)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is Annotated:
        base, *extras = args
        ranges = [e for e in extras if isinstance(e, Range)]
        return conforms(value, base) and all(r.holds(float(value)) for r in ranges)
    if origin in (Union, types.UnionType):
        return any(conforms(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_int(value)
    if hint is float:
        return is_number(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence):
        return isinstance(value, (list, tuple)) and all(conforms(v, args[0] if args else Any) for v in value)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, Mapping)
    raise TypeError(f"cannot check a value against the declared type {hint!r}")


PLURALS = {"a positive integer": "positive integers", "an integer": "integers", "a number": "numbers", "text": "texts"}


def _plural(description: str) -> str:
    """`a positive integer` -> `positive integers`; what has no plural here is bracketed: `(true or false)`."""
    for one, many in PLURALS.items():
        if description.startswith(one):
            return many + description[len(one) :]
    return f"({description})"


def describe_type(hint) -> str:
    """What `hint` allows, in the words of a one-line error (`key=value: allowed: ...`)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        base, *extras = args
        ranges = [e for e in extras if isinstance(e, Range)]
        if ranges and base is int and ranges[0] == Range(minimum=1):
            return "a positive integer"
        noun = "an integer" if base is int else "a number"
        return f"{noun} {ranges[0].describe()}" if ranges else describe_type(base)
    if origin in (Union, types.UnionType):
        parts = [describe_type(arg) for arg in args if arg is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return ", ".join(str(a) for a in args)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "text"
    if origin in (list, tuple, collections.abc.Sequence):
        return f"a list of {_plural(describe_type(args[0]))}" if args else "a list"
    if origin in (dict, collections.abc.Mapping):
        return "a group of keys"
    return "any value"
