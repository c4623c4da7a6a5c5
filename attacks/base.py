"""The attack contract.

Hyperparameters go to `__init__` (keyword-only, no model bound at construction, as in foolbox); `run` gets the
attacker's handles (an Oracle, and a surrogate where the threat model gives one) and returns an
`AttackResult`. Whether an attack succeeded is never taken from the attack: the runner re-checks every
adversarial input on the judge.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import nn

from targets.oracle import AccessDenied, AccessPolicy, Oracle

THREAT_MODELS = ("white_box", "transfer", "score_based", "decision_based")


@dataclass(frozen=True)
class AttackResult:
    x_adv: np.ndarray
    """Adversarial inputs, float32 in [0, 1] and within eps (L-inf) of the originals."""
    queries: np.ndarray
    """Queries the Oracle charged to each example."""
    budget_exhausted: np.ndarray
    """Whether the Oracle refused a query for each example because its budget had run out."""
    queries_to_success: np.ndarray
    """The query count at which the attacker first saw the judge fooled within eps; -1 where it never did."""

    def __post_init__(self) -> None:
        n = len(self.x_adv)
        if n == 0:
            raise ValueError("the attack evaluated zero examples")
        for name in ("queries", "budget_exhausted", "queries_to_success"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"AttackResult.{name} has {len(getattr(self, name))} entries for {n} examples")


class Attack(ABC):
    """An L-inf attack within `eps` of each original, on inputs in [0, 1]."""

    threat_model: ClassVar[str]
    needs_surrogate: ClassVar[bool] = False

    def __init__(self, *, eps: float, seed: int = 0) -> None:
        self.eps = float(eps)
        self.seed = int(seed)

    @classmethod
    def check_access(cls, policy: AccessPolicy) -> None:
        """Raise `AccessDenied` if the policy does not give this attack what it needs."""
        if cls.threat_model == "white_box" and policy.weights != "open":
            raise AccessDenied(
                f"a {cls.threat_model} attack needs the judge's gradients, but access.weights={policy.weights}; "
                "allowed: access.weights=open, or a transfer, score-based or decision-based attack"
            )
        if cls.threat_model == "score_based" and policy.output == "label":
            raise AccessDenied(
                "a score_based attack needs scores, but access.output=label; "
                "allowed: access.output=logits or probabilities, or a decision-based attack"
            )

    @abstractmethod
    def run(self, oracle: Oracle, x: np.ndarray, y: np.ndarray, *, surrogate: nn.Module | None = None) -> AttackResult:
        """Attack every row of `x` (true labels `y`) through the handles the threat model gives."""

    def project(self, x_adv: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Clip into the eps-ball around `x` and into [0, 1]."""
        return np.clip(np.clip(x_adv, x - self.eps, x + self.eps), 0.0, 1.0).astype(np.float32)
