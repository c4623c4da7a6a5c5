"""The attack contract.

Hyperparameters go to `__init__` (keyword-only, typed with `targets.params`, no model bound at construction,
as in foolbox); `run` gets the attacker's kit (`AttackerKit`: its client on the API, and what else its threat
model gives it) and returns an `AttackResult`. Whether an attack succeeded is never taken from the attack:
the runner re-checks every adversarial input on the judge against the attack's `Goal`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Hashable, Sequence

import numpy as np
from torch import nn

from gavel.targets.access import AccessPolicy, AttackerClient, ThreatModel
from gavel.targets.datasets import Pool
from gavel.targets.judges.base import FULL, Capabilities
from gavel.targets.params import NonNegativeInt, declared_hyperparameters

DISTANCE_TOLERANCE = 1e-6


def distances(x_adv: np.ndarray, x: np.ndarray, norm: str) -> np.ndarray:
    """Per-row L-inf or L2 distance."""
    delta = (np.asarray(x_adv, dtype=np.float64) - np.asarray(x, dtype=np.float64)).reshape(len(x), -1)
    return np.abs(delta).max(axis=1, initial=0.0) if norm == "inf" else np.sqrt((delta**2).sum(axis=1))


def as_scores(answers: np.ndarray, n_classes: int) -> np.ndarray:
    """API answers as rows of scores; a label-only answer becomes a one-hot row, which an attack reads as the class."""
    if answers.ndim == 1:
        one_hot = np.zeros((len(answers), n_classes), dtype=np.float32)
        one_hot[np.arange(len(answers)), answers] = 1.0
        return one_hot
    return answers.astype(np.float32)


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

    @classmethod
    def offline(cls, x_adv: np.ndarray) -> AttackResult:
        """Crafted without a single query: the attacker held the model it attacked."""
        n = len(x_adv)
        return cls(
            x_adv=x_adv,
            queries=np.zeros(n, dtype=np.int64),
            budget_exhausted=np.zeros(n, dtype=bool),
            queries_to_success=np.full(n, -1, dtype=np.int64),
        )

    @classmethod
    def charged(
        cls, client: AttackerClient, keys: Sequence[Hashable], x_adv: np.ndarray, queries_to_success: np.ndarray
    ) -> AttackResult:
        """Queries and stops as the operator's ledger has them for each example's key."""
        return cls(
            x_adv=x_adv,
            queries=np.array([client.queries(key) for key in keys], dtype=np.int64),
            budget_exhausted=np.array([client.stopped(key) for key in keys], dtype=bool),
            queries_to_success=queries_to_success,
        )


@dataclass(frozen=True)
class AttackerKit:
    """Everything the attacker holds; each kind of attack reads what its threat model gives it.

    `keys` are the Oracle keys the rows are charged to (default 0..n-1) and `starts` the inputs a query stage
    starts from, one per row or None: both are set by a hybrid attacker handing its rows on (`for_rows`).
    """

    client: AttackerClient
    surrogate: nn.Module | None = None
    attacker_data: Pool | None = None
    starts: tuple[np.ndarray | None, ...] | None = None
    keys: tuple[Hashable, ...] | None = None
    device: str = "cpu"
    """Where gavel's own attacks keep their tensors (the run's device)."""
    poison: Any = None
    """What the attacker's contributors put in the judge's training data (a `Poison`), for its trigger."""

    def keys_for(self, n: int) -> list[Hashable]:
        return list(range(n)) if self.keys is None else list(self.keys)

    def start(self, row: int) -> np.ndarray | None:
        return None if self.starts is None else self.starts[row]

    def require_surrogate(self) -> nn.Module:
        if self.surrogate is None:
            raise ValueError("an attack that crafts on a surrogate was given no surrogate model")
        return self.surrogate

    def require_poison(self):
        if self.poison is None or not self.poison.active:
            raise ValueError("a backdoor attack was given no poison: nothing was planted in the judge's training data")
        return self.poison

    def require_attacker_data(self, why: str) -> Pool:
        if self.attacker_data is None:
            raise ValueError(f"{why}, and the attacker was given no data of its own")
        return self.attacker_data

    def for_rows(self, keys: Sequence[Hashable], starts: Sequence[np.ndarray | None]) -> AttackerKit:
        return replace(self, keys=tuple(keys), starts=tuple(starts))


class Attack(ABC):
    """An attack on inputs in [0, 1], within `eps` of each original in the attack's `norm`."""

    threat_model: ClassVar[ThreatModel]
    norm: ClassVar[str | None] = "inf"
    supports_targeted: ClassVar[bool] = False
    needs_attacker_data: ClassVar[bool] = False

    def __init__(
        self, *, eps: float, targeted: bool = False, target_class: NonNegativeInt | None = None, seed: int = 0
    ) -> None:
        if targeted and not self.supports_targeted:
            raise ValueError(f"attack.targeted=true: {type(self).__name__} has no targeted mode")
        if targeted and target_class is None:
            raise ValueError("attack.targeted=true needs attack.target_class (the verdict to force)")
        self.eps = float(eps)
        self.targeted = bool(targeted)
        self.target_class = int(target_class) if targeted else None
        self.seed = int(seed)

    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """The hyperparameters a config may set, each with its declared type: keyword-only parameters of
        `__init__` along the class hierarchy."""
        return declared_hyperparameters(cls.__mro__)

    @property
    def goal(self) -> Goal:
        return Goal(self.eps, self.norm, self.target_class)

    def library_labels(self, y: np.ndarray) -> np.ndarray:
        """The labels an attack library wants: the true ones, or the target verdict when targeted."""
        return np.full_like(y, self.target_class) if self.targeted else y

    def check_access(self, policy: AccessPolicy, capabilities: Capabilities = FULL, judge: str = "the judge") -> None:
        """Raise `AccessDenied` if the policy, or the judge (what it offers), does not give this attack what it
        needs."""
        self.threat_model.check(policy, capabilities, judge)

    @abstractmethod
    def run(self, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> AttackResult:
        """Attack every row of `x` (true labels `y`) with what the attacker holds."""

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
