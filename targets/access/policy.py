"""What the operator lets an attacker see and how much (`conf/access`), and the one rule for what an example
may still spend.

The budget is per attacked example (`access.budget`, the literature's measure). Queries that serve the whole
attack (labelling data for model extraction, key `SHARED`) come out of the same budget: the attacker has
`budget` times the examples it plans to attack in all, and each example's allowance shrinks by its share of
what was spent on shared queries. The Oracle enforces this rule; the attacker's client and model extraction
read it (an attacker knows the operator's published rule); nobody writes it again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Hashable, Mapping

SHARED = "shared"

SYBIL = ("rotate", "spread")
"""How the attacker uses its accounts (`AttackerClient`): one after another, or each example's queries spread
round all of them."""


class Weights(StrEnum):
    OPEN = "open"
    HIDDEN = "hidden"


class Output(StrEnum):
    LOGITS = "logits"
    PROBABILITIES = "probabilities"
    LABEL = "label"


def _positive_int_or_none(key: str, value, meaning: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{key}={value!r}: allowed: a positive integer ({meaning}) or null (unlimited)")


def _positive_number(key: str, value, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{key}={value!r}: allowed: {allowed}")


def _choice(key: str, value, options: type[Enum]) -> Enum:
    try:
        return options(value)
    except ValueError:
        raise ValueError(f"{key}={value!r}: allowed: {', '.join(o.value for o in options)}") from None


@dataclass(frozen=True)
class AccessPolicy:
    """The access policy; every field is checked on construction (a `ValueError` names the key)."""

    weights: Weights
    output: Output
    budget: int | None
    account_limit: int | None = None
    window: float = 24.0
    rate: float | None = None
    accounts: int = 1
    account_cost: float = 0.0
    sybil: str = "rotate"
    queries_per_visit: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", _choice("access.weights", self.weights, Weights))
        object.__setattr__(self, "output", _choice("access.output", self.output, Output))
        _positive_int_or_none("access.budget", self.budget, "queries per example")
        _positive_int_or_none("access.account_limit", self.account_limit, "queries per account per window")
        _positive_number("access.window", self.window, "a positive number of hours")
        if self.rate is not None:
            _positive_number("access.rate", self.rate, "a positive number of queries per minute, or null")
        if isinstance(self.accounts, bool) or not isinstance(self.accounts, int) or self.accounts < 1:
            raise ValueError(f"access.accounts={self.accounts!r}: allowed: a positive integer")
        if self.sybil not in SYBIL:
            raise ValueError(f"access.sybil={self.sybil!r}: allowed: {', '.join(SYBIL)}")
        q = self.queries_per_visit
        if isinstance(q, bool) or not isinstance(q, int) or q < 1:
            raise ValueError(f"access.queries_per_visit={q!r}: allowed: a positive integer")
        cost = self.account_cost
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not 0 <= cost < math.inf:
            raise ValueError(f"access.account_cost={self.account_cost!r}: allowed: a number >= 0")

    @classmethod
    def from_mapping(cls, values: Mapping) -> AccessPolicy:
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"access.{unknown[0]}: no such key; allowed keys: {', '.join(cls.__dataclass_fields__)}")
        return cls(**values)

    def allowance(self, example: Hashable, used: Mapping[Hashable, int], planned: int | None) -> int | float:
        """What `example` may still be charged under the budget, given the queries `used` so far per key and
        the number of examples the attack `planned` for (`math.inf` when the budget is unlimited)."""
        if self.budget is None:
            return math.inf
        if example == SHARED:
            if planned is None:
                raise RuntimeError("shared queries under a per-example budget need the attack's plan first")
            return max(0, self.budget * planned - sum(used.values()))
        shared_share = math.ceil(used.get(SHARED, 0) / planned) if planned else 0
        return max(0, self.budget - shared_share - used.get(example, 0))

    def account_allowance(self, used_in_window: int) -> int | float:
        """What one account may still ask in its current window (`math.inf` without a limit)."""
        return math.inf if self.account_limit is None else max(0, self.account_limit - used_in_window)
