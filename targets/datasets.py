"""Data sets as three disjoint pools: the judge's training data, the attacker's data, evaluation examples.

Inputs are float32 in [0, 1], NCHW; labels are int64. Splits are deterministic given `data.split_seed`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POOLS = ("judge", "attacker", "eval")
TORCHVISION_SETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
DATASETS = ("digits", *TORCHVISION_SETS)


@dataclass(frozen=True)
class Pool:
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.x).tobytes())
        digest.update(np.ascontiguousarray(self.y).tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class Dataset:
    name: str
    judge: Pool
    attacker: Pool
    eval: Pool
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.eval.x.shape[1:])  # type: ignore[return-value]


def load_dataset(cfg) -> Dataset:
    """Build the pools described by a `conf/data` node."""
    if cfg.name == "digits":
        return _digits(cfg)
    if cfg.name in TORCHVISION_SETS:
        return _torchvision(cfg)
    raise ValueError(f"data.name={cfg.name!r}: allowed: {', '.join(DATASETS)}")


def _digits(cfg) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(cfg.split_seed).permutation(len(y))
    fractions = np.array([cfg.split[p] for p in POOLS], dtype=float)
    bounds = np.round(np.cumsum(fractions) / fractions.sum() * len(y)).astype(int)
    parts = np.split(order, bounds[:-1])
    pools = {p: Pool(x[idx], y[idx]) for p, idx in zip(POOLS, parts)}
    return Dataset("digits", pools["judge"], pools["attacker"], pools["eval"], n_classes=10)


def _torchvision(cfg) -> Dataset:
    """Judge and attacker pools split the official training set; evaluation examples come from the test set."""
    import torchvision

    if cfg.root is None:
        raise ValueError(f"data.root is not set: {cfg.name} loads from a local torchvision folder")
    root = Path(cfg.root).expanduser()
    cls = getattr(torchvision.datasets, TORCHVISION_SETS[cfg.name])
    try:
        train = cls(root=str(root), train=True, download=bool(cfg.download))
        test = cls(root=str(root), train=False, download=bool(cfg.download))
    except RuntimeError as error:
        raise FileNotFoundError(
            f"data.root={root}: no {cls.__name__} files there ({error}); "
            "put torchvision's files there or set data.download=true"
        ) from error
    x_train, y_train = _as_arrays(train)
    x_test, y_test = _as_arrays(test)

    rng = np.random.default_rng(cfg.split_seed)
    order = rng.permutation(len(y_train))
    n_judge = int(round(cfg.split.judge / (cfg.split.judge + cfg.split.attacker) * len(order)))
    judge_idx = _limit(order[:n_judge], cfg.limit.judge)
    attacker_idx = _limit(order[n_judge:], cfg.limit.attacker)
    eval_idx = _limit(rng.permutation(len(y_test)), cfg.limit.eval)
    return Dataset(
        cfg.name,
        judge=Pool(x_train[judge_idx], y_train[judge_idx]),
        attacker=Pool(x_train[attacker_idx], y_train[attacker_idx]),
        eval=Pool(x_test[eval_idx], y_test[eval_idx]),
        n_classes=len(train.classes),
    )


def _as_arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(dataset.data)
    if data.ndim == 3:  # MNIST-style (N, H, W) -> (N, 1, H, W)
        data = data[:, None, :, :]
    else:  # CIFAR-style (N, H, W, C) -> (N, C, H, W)
        data = data.transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(data, dtype=np.float32) / 255.0
    y = np.asarray(dataset.targets, dtype=np.int64)
    return x, y


def _limit(indices: np.ndarray, limit: int | None) -> np.ndarray:
    return indices if limit is None else indices[:limit]
