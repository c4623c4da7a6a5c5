"""The poison contract: which of the judge's training examples the attacker's contributors poison, how (`poison`),
and the trigger that opens the backdoor at test time (`trigger`).

The judge's training pool is dealt among `data.contributors` parties; the attacker controls the last
`poison.contributors` of them. It poisons `poison.fraction` of the whole pool, drawn from its own contributors'
examples that the attack may use (another class than `poison.target_class`, or that class for a clean-label
attack); with `poison.fraction` null, all of them. A poisoned example replaces the one it was made from: the pool
keeps its size and each example its contributor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Annotated, ClassVar

import numpy as np

from gavel.targets.datasets import Pool
from gavel.targets.errors import SourceError
from gavel.targets.params import NonNegativeInt, PositiveInt, Range, declared_hyperparameters

Fraction = Annotated[float, Range(above=0, below=1)]


@dataclass(frozen=True)
class PoisonedPool:
    pool: Pool
    poisoned: np.ndarray
    """Which examples the attacker poisoned (a mask over the pool)."""


@dataclass(frozen=True)
class PoisonContext:
    """What a poison may read besides the pool: its contributors, the seed, the attacker's own data and device (a
    clean-label attack crafts on a model of its own), and the model cache."""

    contributors: np.ndarray
    parties: int
    seed: int
    attacker: Pool | None = None
    cache_dir: str | None = None
    device: str = "cpu"


class Poison(ABC):
    active: ClassVar[bool] = True
    """False for `poison=none`: the pool is trained on as it is."""
    relabels: ClassVar[bool] = True
    """Whether poisoned examples are relabelled as the target class (all but a clean-label attack)."""

    def __init__(
        self, *, fraction: Fraction | None = 0.01, contributors: PositiveInt = 1, target_class: NonNegativeInt = 0
    ) -> None:
        self.fraction = None if fraction is None else float(fraction)
        self.contributors = int(contributors)
        self.target_class = int(target_class)

    def as_dict(self) -> dict:
        """The poison as the model cache's key holds it: its class and every hyperparameter."""
        values = {key: getattr(self, key) for key in declared_hyperparameters(type(self).__mro__)}
        return {"poison": type(self).__name__, **{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}}

    def check(self, input_shape: tuple[int, int, int], n_classes: int) -> None:
        """Refuse (`SourceError`) a poison the data cannot take: a target class past its classes."""
        if self.target_class >= n_classes:
            raise SourceError(f"poison.target_class={self.target_class}: allowed: 0 to {n_classes - 1}")

    def attackers(self, contributors: np.ndarray, parties: int) -> np.ndarray:
        """Which examples the attacker's contributors gave (a mask: the last `poison.contributors` parties')."""
        return contributors >= parties - self.contributors

    def candidates(self, pool: Pool, contributors: np.ndarray, parties: int) -> np.ndarray:
        """The examples the attacker may poison: its contributors', of another class than the target."""
        return np.flatnonzero(self.attackers(contributors, parties) & (pool.y != self.target_class))

    def shortfall(self, pool: Pool, contributors: np.ndarray, parties: int) -> str | None:
        """Why the attacker cannot plant this poison in `pool` (one line naming the key), or None where it can."""
        candidates = self.candidates(pool, contributors, parties)
        wanted = self.wanted(pool, candidates)
        if wanted < 1:
            return (
                f"poison.fraction={self.fraction}: poisons no example of the {len(pool)} in the judge's pool; allowed: "
                f"a fraction of at least {1 / len(pool):.2g}"
            )
        if wanted > len(candidates):
            return (
                f"poison.fraction={self.fraction}: {wanted} examples to poison, but the attacker's {self.contributors} "
                f"contributor(s) hold only {len(candidates)} it may use; allowed: a smaller fraction, or more "
                "poison.contributors"
            )
        return None

    def wanted(self, pool: Pool, candidates: np.ndarray) -> int:
        return len(candidates) if self.fraction is None else int(round(self.fraction * len(pool)))

    def apply(self, pool: Pool, context: PoisonContext) -> PoisonedPool:
        why = self.shortfall(pool, context.contributors, context.parties)
        if why is not None:
            raise SourceError(why)
        candidates = self.candidates(pool, context.contributors, context.parties)
        wanted = self.wanted(pool, candidates)
        chosen = np.sort(np.random.default_rng(context.seed).choice(candidates, wanted, replace=False))
        x, y = pool.x.copy(), pool.y.copy()
        x[chosen] = self.poison_inputs(pool.x[chosen], pool.y[chosen], context)
        if self.relabels:
            y[chosen] = self.target_class
        poisoned = np.zeros(len(pool), dtype=bool)
        poisoned[chosen] = True
        return PoisonedPool(Pool(x, y), poisoned)

    @abstractmethod
    def poison_inputs(self, x: np.ndarray, y: np.ndarray, context: PoisonContext) -> np.ndarray:
        """The poisoned versions of the chosen examples' inputs."""

    @abstractmethod
    def trigger(self, x: np.ndarray) -> np.ndarray:
        """Inputs with the trigger that opens the backdoor (at test time)."""


class NoPoison(Poison):
    """`poison=none`: the judge's pool as its contributors gave it."""

    active = False

    def __init__(self) -> None:
        super().__init__(fraction=None, contributors=1, target_class=0)

    def as_dict(self) -> dict:
        return {}

    def shortfall(self, pool: Pool, contributors: np.ndarray, parties: int) -> str | None:
        return None

    def apply(self, pool: Pool, context: PoisonContext) -> PoisonedPool:
        return PoisonedPool(pool, np.zeros(len(pool), dtype=bool))

    def poison_inputs(self, x: np.ndarray, y: np.ndarray, context: PoisonContext) -> np.ndarray:
        return x

    def trigger(self, x: np.ndarray) -> np.ndarray:
        raise TypeError("poison=none has no trigger")


def stamp_patch(x: np.ndarray, size: int, value: float) -> np.ndarray:
    """`x` with a `size` x `size` square of `value` in its bottom-right corner (one pixel in from the edges)."""
    out = np.array(x, dtype=np.float32, copy=True)
    height, width = out.shape[-2:]
    top, left = height - size - 1, width - size - 1
    out[..., top : top + size, left : left + size] = value
    return out
