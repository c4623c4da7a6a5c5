"""The attack contract.

Hyperparameters go to `__init__` (keyword-only, no model bound at construction, as in foolbox); `run` gets
the attacker's handle on the API (an `AttackerClient`), a surrogate where the threat model gives one, and
returns an `AttackResult`. Whether an attack succeeded is never taken from the attack: the runner re-checks
every adversarial input on the judge against the attack's `Goal`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import nn

from targets.datasets import Pool
from targets.oracle import AccessDenied, AccessPolicy

DISTANCE_TOLERANCE = 1e-6


def distances(x_adv: np.ndarray, x: np.ndarray, norm: str) -> np.ndarray:
    """Per-row L-inf or L2 distance."""
    delta = (np.asarray(x_adv, dtype=np.float64) - np.asarray(x, dtype=np.float64)).reshape(len(x), -1)
    return np.abs(delta).max(axis=1, initial=0.0) if norm == "inf" else np.sqrt((delta**2).sum(axis=1))


@dataclass(frozen=True)
class Goal:
    """What counts as fooling the judge: the verdict changes (or becomes `target`) within `eps` in `norm`.

    `norm=None` is an unbounded perturbation (a patch): only the verdict counts.
    """

    eps: float
    norm: str | None = "inf"
    target: int | None = None

    def fooled(self, labels: np.ndarray, y: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels)
        return labels == self.target if self.target is not None else labels != np.asarray(y)

    def within(self, x_adv: np.ndarray, x: np.ndarray) -> np.ndarray:
        if self.norm is None:
            return np.ones(len(x), dtype=bool)
        return distances(x_adv, x, self.norm) <= self.eps + DISTANCE_TOLERANCE


@dataclass(frozen=True)
class AttackResult:
    x_adv: np.ndarray
    """Adversarial inputs, float32 in [0, 1] (within eps of the originals for norm-bounded attacks)."""
    queries: np.ndarray
    """Queries the Oracle charged to each example."""
    budget_exhausted: np.ndarray
    """Whether the attack on each example was stopped by a refused query (its budget, or every account spent)."""
    queries_to_success: np.ndarray
    """The query count at which the attacker first saw the judge fooled; -1 where it never did."""

    def __post_init__(self) -> None:
        n = len(self.x_adv)
        if n == 0:
            raise ValueError("the attack evaluated zero examples")
        for name in ("queries", "budget_exhausted", "queries_to_success"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"AttackResult.{name} has {len(getattr(self, name))} entries for {n} examples")


class Attack(ABC):
    """An attack on inputs in [0, 1], within `eps` of each original in the attack's `norm`."""

    threat_model: ClassVar[str]  # white_box | transfer | score_based | decision_based | hybrid
    norm: ClassVar[str | None] = "inf"
    supports_targeted: ClassVar[bool] = False
    needs_surrogate: ClassVar[bool] = False
    needs_attacker_data: ClassVar[bool] = False

    def __init__(self, *, eps: float, targeted: bool = False, target_class: int | None = None, seed: int = 0) -> None:
        if targeted and not self.supports_targeted:
            raise ValueError(f"attack.targeted=true: {type(self).__name__} has no targeted mode")
        if targeted and target_class is None:
            raise ValueError("attack.targeted=true needs attack.target_class (the verdict to force)")
        self.eps = float(eps)
        self.targeted = bool(targeted)
        self.target_class = int(target_class) if targeted else None
        self.seed = int(seed)

    @property
    def goal(self) -> Goal:
        return Goal(self.eps, self.norm, self.target_class)

    def library_labels(self, y: np.ndarray) -> np.ndarray:
        """The labels an attack library wants: the true ones, or the target verdict when targeted."""
        return np.full_like(y, self.target_class) if self.targeted else y

    def check_access(self, policy: AccessPolicy) -> None:
        """Raise `AccessDenied` if the policy does not give this attack what it needs."""
        if self.threat_model == "white_box" and policy.weights != "open":
            raise AccessDenied(
                f"a {self.threat_model} attack needs the judge's gradients, but access.weights={policy.weights}; "
                "allowed: access.weights=open, or a transfer, score-based or decision-based attack"
            )
        if self.threat_model == "score_based" and policy.output == "label":
            raise AccessDenied(
                "a score_based attack needs scores, but access.output=label; "
                "allowed: access.output=logits or probabilities, or a decision-based attack"
            )

    @abstractmethod
    def run(
        self,
        client,
        x: np.ndarray,
        y: np.ndarray,
        *,
        surrogate: nn.Module | None = None,
        attacker_data: Pool | None = None,
    ) -> AttackResult:
        """Attack every row of `x` (true labels `y`) through the handles the threat model gives: the client
        always, the attacker's surrogate when `needs_surrogate`, its own data pool when `needs_attacker_data`."""

    def project(self, x_adv: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Into the eps-ball around `x` in the attack's norm, and into [0, 1]."""
        x_adv = np.asarray(x_adv, dtype=np.float32)
        if self.norm == "inf":
            x_adv = np.clip(x_adv, x - self.eps, x + self.eps)
        elif self.norm == "2":
            delta = (x_adv - x).reshape(len(x), -1)
            scale = np.minimum(1.0, self.eps / np.maximum(np.linalg.norm(delta, axis=1), 1e-12))
            x_adv = x + (delta * scale[:, None]).reshape(x.shape)
        return np.clip(x_adv, 0.0, 1.0).astype(np.float32)
