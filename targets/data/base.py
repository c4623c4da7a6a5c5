"""The data-source contract: hyperparameters in `__init__` (keyword-only, typed, checked at the config boundary),
and `load`, which reads the pools (`targets.datasets.Dataset`) before any run starts.

A foreign judge declares its input shape; `load` gets it, and a source that can resize its images (the user's own)
resizes them to it, while a fixed set refuses a shape it does not have. Errors are `SourceError`s naming the key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Annotated, ClassVar, Sequence

import numpy as np

from gavel.targets.datasets import Dataset, Pool, split_among
from gavel.targets.errors import SourceError
from gavel.targets.params import SEED_MAX, BadValue, PositiveFloat, Range

Shares = Sequence[PositiveFloat]

SplitSeed = Annotated[int, Range(minimum=0, maximum=SEED_MAX)]


CONTRIBUTOR_SEED = 104729
"""Added to `data.split_seed` to deal the judge's pool among its contributors (another stream than the split's)."""


class DataSource(ABC):
    contributors: int = 1
    """How many parties contributed the judge's training pool (`data.contributors`)."""
    shares: tuple[float, ...] | None = None
    """Their shares of it, in proportion (`data.shares`); None: equal."""
    proxies: ClassVar[tuple[str, ...]] = ("transformed",)
    """What `surrogate.proxy` may be for this data: `transformed` (the attacker's pool restyled) always, another
    set with the same classes where one exists."""

    @property
    def names_judge_training_data(self) -> bool:
        """Whether the user named the judge's training data (`data.judge_train`): then `surrogate.knowledge=leaked`
        may use it whoever trained the judge. A built-in set only holds a pool for gavel to train its judge on; what
        trained a judge of the user's own, gavel cannot know."""
        return False

    @abstractmethod
    def load(self, input_shape: tuple[int, int, int] | None = None) -> Dataset:
        """The pools, for a judge that takes `input_shape` (None: the data's own)."""


def contributor_shares(contributors: int, shares) -> tuple[float, ...] | None:
    """`data.shares` checked against `data.contributors`: one positive weight each, or null (equal shares)."""
    if shares is None:
        return None
    if len(shares) != contributors:
        raise BadValue("shares", list(shares), f"{contributors} weights, one per contributor, or null (equal shares)")
    return tuple(float(share) for share in shares)


def with_contributors(dataset: Dataset, parties: int, split_seed: int, shares=None) -> Dataset:
    """The dataset with its judge pool dealt among `parties` contributors, in equal shares or in `shares`."""
    if dataset.judge is None:
        return dataset
    if parties > len(dataset.judge):
        raise SourceError(
            f"data.contributors={parties}: more than the {len(dataset.judge)} examples of the judge's training pool; "
            f"allowed: 1 to {len(dataset.judge)}"
        )
    owners = split_among(len(dataset.judge), parties, split_seed + CONTRIBUTOR_SEED, shares)
    return replace(dataset, contributors=owners)


def check_shape(dataset: Dataset, input_shape: tuple[int, int, int] | None, option: str) -> Dataset:
    """A fixed set's images must be the shape a foreign judge declares: it is not resized."""
    if input_shape is not None and tuple(input_shape) != dataset.input_shape:
        raise SourceError(
            f"target.input_shape={list(input_shape)}: data={option} holds images of {list(dataset.input_shape)}; "
            f"allowed: {list(dataset.input_shape)}, or data=image_folder or data=npz (resized to the judge's input)"
        )
    return dataset


def limited(indices: np.ndarray, limit: int | None) -> np.ndarray:
    return indices if limit is None else indices[:limit]


def pool(x: np.ndarray, y: np.ndarray, indices: np.ndarray) -> Pool:
    return Pool(x[indices], y[indices])


DIGIT_NAMES = tuple(str(digit) for digit in range(10))
