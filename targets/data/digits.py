"""scikit-learn's bundled handwritten digits (1,797 images, 8x8, 10 classes): real data, no download, split three
ways."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gavel.targets.data.base import (
    DIGIT_NAMES,
    DataSource,
    Shares,
    SplitSeed,
    check_shape,
    contributor_shares,
    with_contributors,
)
from gavel.targets.datasets import Dataset, Pool
from gavel.targets.params import PositiveFloat, PositiveInt

POOLS = ("judge", "attacker", "eval")


@dataclass(frozen=True)
class ThreeWaySplit:
    """Shares of the whole set for the three pools (normalised to sum to 1)."""

    judge: PositiveFloat = 0.5
    attacker: PositiveFloat = 0.3
    eval: PositiveFloat = 0.2


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images.astype(np.float32) / 16.0)[:, None, :, :], bunch.target.astype(np.int64)


class Digits(DataSource):
    proxies = ("transformed", "mnist")

    def __init__(
        self,
        *,
        split: ThreeWaySplit = ThreeWaySplit(),
        split_seed: SplitSeed = 0,
        contributors: PositiveInt = 1,
        shares: Shares | None = None,
    ) -> None:
        self.split = split
        self.split_seed = int(split_seed)
        self.contributors = int(contributors)
        self.shares = contributor_shares(self.contributors, shares)

    def load(self, input_shape: tuple[int, int, int] | None = None) -> Dataset:
        x, y = digits_arrays()
        order = np.random.default_rng(self.split_seed).permutation(len(y))
        fractions = np.array([getattr(self.split, p) for p in POOLS], dtype=float)
        bounds = np.round(np.cumsum(fractions) / fractions.sum() * len(y)).astype(int)
        pools = {p: Pool(x[idx], y[idx]) for p, idx in zip(POOLS, np.split(order, bounds[:-1]))}
        dataset = Dataset(
            "digits", pools["eval"], pools["attacker"], judge=pools["judge"], class_names=DIGIT_NAMES,
            operator=pools["judge"],
        )  # fmt: skip
        return with_contributors(
            check_shape(dataset, input_shape, "digits"), self.contributors, self.split_seed, self.shares
        )
