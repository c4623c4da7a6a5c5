"""What torchvision's data sets share (`data=mnist|fashion_mnist|cifar10`): a local folder in torchvision's on-disk
layout (downloaded only with `data.download=true`), its training set split between the judge and the attacker, the
evaluation examples from its test set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from gavel.targets.data.base import (
    DataSource,
    Shares,
    SplitSeed,
    check_shape,
    contributor_shares,
    limited,
    pool,
    with_contributors,
)
from gavel.targets.data.idx import IdxSet, as_arrays, idx_arrays
from gavel.targets.datasets import Dataset
from gavel.targets.params import BadValue, PositiveFloat, PositiveInt


@dataclass(frozen=True)
class TwoWaySplit:
    """Shares of the official training set for the judge's and the attacker's pools."""

    judge: PositiveFloat = 0.5
    attacker: PositiveFloat = 0.5


@dataclass(frozen=True)
class PoolLimits:
    """At most this many examples per pool (None: all)."""

    judge: PositiveInt | None = None
    attacker: PositiveInt | None = None
    eval: PositiveInt | None = None


class TorchvisionSet(DataSource):
    option: ClassVar[str]
    """The `data=` option, for messages."""
    torchvision_class: ClassVar[str]
    idx_set: ClassVar[IdxSet | None] = None
    """MNIST-style sets also load from a folder of their four IDX files."""

    def __init__(
        self,
        *,
        root: str | None = None,
        download: bool = False,
        split_seed: SplitSeed = 0,
        split: TwoWaySplit = TwoWaySplit(),
        limit: PoolLimits = PoolLimits(),
        contributors: PositiveInt = 1,
        shares: Shares | None = None,
    ) -> None:
        if root is None:
            raise BadValue("root", None, "a folder", why=f"{self.option} loads from a local torchvision folder")
        self.root = str(root)
        self.download = bool(download)
        self.split_seed = int(split_seed)
        self.split = split
        self.limit = limit
        self.contributors = int(contributors)
        self.shares = contributor_shares(self.contributors, shares)

    def load(self, input_shape: tuple[int, int, int] | None = None) -> Dataset:
        x_train, y_train, x_test, y_test, class_names = self._arrays(Path(self.root).expanduser())
        rng = np.random.default_rng(self.split_seed)
        order = rng.permutation(len(y_train))
        n_judge = int(round(self.split.judge / (self.split.judge + self.split.attacker) * len(order)))
        judge = pool(x_train, y_train, limited(order[:n_judge], self.limit.judge))
        attacker = pool(x_train, y_train, limited(order[n_judge:], self.limit.attacker))
        evaluation = pool(x_test, y_test, limited(rng.permutation(len(y_test)), self.limit.eval))
        dataset = Dataset(self.option, evaluation, attacker, judge=judge, class_names=class_names, operator=judge)
        return with_contributors(
            check_shape(dataset, input_shape, self.option), self.contributors, self.split_seed, self.shares
        )

    def _arrays(self, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
        import torchvision

        cls = getattr(torchvision.datasets, self.torchvision_class)
        idx = idx_arrays(root, self.idx_set) if self.idx_set is not None else None
        if idx is not None:
            return (*idx, tuple(cls.classes))
        try:
            train = cls(root=str(root), train=True, download=self.download)
            test = cls(root=str(root), train=False, download=self.download)
        except RuntimeError as error:
            idx_too = " or the four IDX files" if self.idx_set is not None else ""
            raise FileNotFoundError(
                f"data.root={root}: no {cls.__name__} files there ({error}); "
                f"put torchvision's files{idx_too} there or set data.download=true"
            ) from error
        return (*as_arrays(train), *as_arrays(test), tuple(train.classes))
