"""Data sets as three disjoint pools: the judge's training data, the attacker's data, evaluation examples.

Inputs are float32 in [0, 1], NCHW; labels are int64. Splits are deterministic given `data.split_seed`.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import zlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

POOLS = ("judge", "attacker", "eval")


class DatasetName(StrEnum):
    DIGITS = "digits"
    MNIST = "mnist"
    FASHION_MNIST = "fashion_mnist"
    CIFAR10 = "cifar10"

    @property
    def n_classes(self) -> int:
        return 10  # digits, MNIST, Fashion-MNIST and CIFAR-10 all have ten


TORCHVISION_SETS = {
    DatasetName.MNIST: "MNIST",
    DatasetName.FASHION_MNIST: "FashionMNIST",
    DatasetName.CIFAR10: "CIFAR10",
}
DATASETS = tuple(name.value for name in DatasetName)


@dataclass(frozen=True)
class Split:
    """Shares of the data for the three pools. The embedded digits split the whole set three ways; a
    torchvision set splits its training set between judge and attacker (`eval` comes from its test set)."""

    judge: float
    attacker: float
    eval: float | None = None


@dataclass(frozen=True)
class PoolLimits:
    """At most this many examples per pool (None: all); torchvision sets only."""

    judge: int | None = None
    attacker: int | None = None
    eval: int | None = None


@dataclass(frozen=True)
class DataSpec:
    """A `conf/data` node."""

    name: DatasetName
    root: str | None = None
    download: bool = False
    split_seed: int = 0
    split: Split = Split(0.5, 0.3, 0.2)
    limit: PoolLimits = PoolLimits()


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


def load_dataset(spec: DataSpec) -> Dataset:
    """The pools `spec` describes."""
    if spec.name == DatasetName.DIGITS:
        return _digits(spec)
    return _torchvision(spec)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images.astype(np.float32) / 16.0)[:, None, :, :], bunch.target.astype(np.int64)


def _digits(cfg: DataSpec) -> Dataset:
    x, y = _digits_arrays()
    order = np.random.default_rng(cfg.split_seed).permutation(len(y))
    fractions = np.array([getattr(cfg.split, p) for p in POOLS], dtype=float)
    bounds = np.round(np.cumsum(fractions) / fractions.sum() * len(y)).astype(int)
    parts = np.split(order, bounds[:-1])
    pools = {p: Pool(x[idx], y[idx]) for p, idx in zip(POOLS, parts)}
    return Dataset("digits", pools["judge"], pools["attacker"], pools["eval"], n_classes=10)


def _torchvision(cfg: DataSpec) -> Dataset:
    """Judge and attacker pools split the official training set; evaluation examples come from the test set."""
    import torchvision

    if cfg.root is None:
        raise FileNotFoundError(f"data.root is not set: {cfg.name} loads from a local torchvision folder")
    root = Path(cfg.root).expanduser()
    idx = _idx_arrays(root, cfg.name) if cfg.name in (DatasetName.MNIST, DatasetName.FASHION_MNIST) else None
    if idx is not None:
        x_train, y_train, x_test, y_test = idx
        n_classes = 10
    else:
        cls = getattr(torchvision.datasets, TORCHVISION_SETS[cfg.name])
        try:
            train = cls(root=str(root), train=True, download=cfg.download)
            test = cls(root=str(root), train=False, download=cfg.download)
        except RuntimeError as error:
            idx_too = " or the four IDX files" if cfg.name != DatasetName.CIFAR10 else ""
            raise FileNotFoundError(
                f"data.root={root}: no {cls.__name__} files there ({error}); "
                f"put torchvision's files{idx_too} there or set data.download=true"
            ) from error
        x_train, y_train = _as_arrays(train)
        x_test, y_test = _as_arrays(test)
        n_classes = len(train.classes)

    rng = np.random.default_rng(cfg.split_seed)
    order = rng.permutation(len(y_train))
    n_judge = int(round(cfg.split.judge / (cfg.split.judge + cfg.split.attacker) * len(order)))
    judge_idx = _limit(order[:n_judge], cfg.limit.judge)
    attacker_idx = _limit(order[n_judge:], cfg.limit.attacker)
    eval_idx = _limit(rng.permutation(len(y_test)), cfg.limit.eval)
    return Dataset(
        cfg.name.value,
        judge=Pool(x_train[judge_idx], y_train[judge_idx]),
        attacker=Pool(x_train[attacker_idx], y_train[attacker_idx]),
        eval=Pool(x_test[eval_idx], y_test[eval_idx]),
        n_classes=n_classes,
    )


class DataFilesError(FileNotFoundError):
    """The data set's files are there but cannot be read as it: reported as a missing folder is (one line naming
    `data.root`, exit status 2)."""


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""MNIST's and Fashion-MNIST's four files as their authors distribute them, gzipped or not: a `data.root` holding
them is read directly (Debian's `dataset-fashion-mnist` installs them in /usr/share/datasets/fashion-mnist)."""


FASHION_TRAIN_LABELS_SHA256 = "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
"""Of Fashion-MNIST's train-labels-idx1-ubyte, decompressed: the two sets' files have the same names."""
MNIST_TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
"""MNIST's training images of each digit."""


def _idx_arrays(root: Path, name: DatasetName) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(train images, train labels, test images, test labels) from the IDX files in `root`, as `_as_arrays`
    gives them; None when any of the four is missing. MNIST's and Fashion-MNIST's files have the same names: the
    other set's files are refused (Fashion-MNIST's by the hash of its training labels, MNIST's by its count of each
    digit)."""
    paths = {}
    for file_names in IDX_FILES.values():
        for file_name in file_names:
            found = [path for path in (root / file_name, root / f"{file_name}.gz") if path.is_file()]
            if not found:
                return None
            paths[file_name] = found[0]
    arrays = []
    for images_name, labels_name in IDX_FILES.values():
        try:
            images, labels = read_idx(paths[images_name]), read_idx(paths[labels_name])
        except ValueError as error:
            raise DataFilesError(f"data.root={root}: {error}; allowed: MNIST's IDX files") from None
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise DataFilesError(
                f"data.root={root}: {paths[images_name].name} holds {images.shape} and {paths[labels_name].name} "
                f"{labels.shape}; allowed: images [n, height, width] and n labels"
            )
        arrays += [np.ascontiguousarray(images[:, None], dtype=np.float32) / 255.0, labels.astype(np.int64)]
    _check_which_set(root, name, arrays[1])
    return tuple(arrays)


def _check_which_set(root: Path, name: DatasetName, train_labels: np.ndarray) -> None:
    labels = train_labels.astype(np.uint8)
    header = struct.pack(">II", 0x0801, len(labels))
    fashion = hashlib.sha256(header + labels.tobytes()).hexdigest() == FASHION_TRAIN_LABELS_SHA256
    mnist = tuple(np.bincount(labels, minlength=10).tolist()) == MNIST_TRAIN_COUNTS
    if name == DatasetName.MNIST and fashion:
        raise DataFilesError(
            f"data.root={root}: these are Fashion-MNIST's files; allowed: data=fashion_mnist, or MNIST's"
        )
    if name == DatasetName.FASHION_MNIST and mnist:
        raise DataFilesError(f"data.root={root}: these are MNIST's files; allowed: data=mnist, or Fashion-MNIST's")


def read_idx(path: Path) -> np.ndarray:
    """The array in an IDX file of unsigned bytes (MNIST's format: two zero bytes, the type 0x08, the number of
    dimensions, each dimension as a big-endian uint32, then the values), gzipped if its name ends in .gz."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: unreadable ({error})") from error
    if len(raw) < 4 or raw[:3] != b"\0\0\x08":
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: its header is cut short")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    values = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != math.prod(shape):
        raise ValueError(f"{path}: holds {values.size} values where its header says {shape}")
    return values.reshape(shape)


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


def subsample(pool: Pool, fraction: float, seed: int) -> Pool:
    """A seeded random `fraction` of a pool (at least one example)."""
    if fraction >= 1.0:
        return pool
    keep = np.sort(np.random.default_rng(seed).permutation(len(pool))[: max(1, int(round(fraction * len(pool))))])
    return Pool(pool.x[keep], pool.y[keep])


PROXIES = {
    DatasetName.DIGITS: ("transformed", "mnist"),
    DatasetName.MNIST: ("transformed", "digits"),
    DatasetName.FASHION_MNIST: ("transformed",),
    DatasetName.CIFAR10: ("transformed",),
}


def proxy_pool(dataset: Dataset, proxy: str, root: str | None, seed: int) -> Pool:
    """Data from another distribution than the judge's, labelled in the judge's label space, the same size
    as the attacker's own pool: a transformed variant of the attacker's pool (other "handwriting": rotated,
    shifted, rescaled, thicker or thinner strokes), or another data set with the same classes, resized."""
    if proxy not in PROXIES[dataset.name]:
        allowed = ", ".join(PROXIES[dataset.name])
        raise ValueError(f"surrogate.proxy={proxy!r} for data={dataset.name}: allowed: {allowed}")
    n = len(dataset.attacker)
    if proxy == "transformed":
        return Pool(_restyle(dataset.attacker.x, seed), dataset.attacker.y)
    if proxy == "digits":
        x, y = _digits_arrays()
    else:
        import torchvision

        if root is None:
            raise FileNotFoundError("surrogate.proxy=mnist needs MNIST under surrogate.proxy_root (or GAVEL_DATA_ROOT)")
        idx = _idx_arrays(Path(root).expanduser(), DatasetName.MNIST)
        if idx is not None:  # MNIST's four IDX files in the folder itself
            x, y = idx[0], idx[1]
        else:
            try:
                train = torchvision.datasets.MNIST(root=str(Path(root).expanduser()), train=True, download=False)
            except RuntimeError as error:
                raise FileNotFoundError(f"surrogate.proxy_root={root}: no MNIST files there ({error})") from error
            x, y = _as_arrays(train)
    order = np.random.default_rng(seed).permutation(len(y))[:n]
    return Pool(_resize(x[order], dataset.input_shape), y[order])


def _resize(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    channels, height, width = shape
    t = torch.from_numpy(x)
    if t.shape[1] != channels:
        t = t.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1)
    mode = "area" if t.shape[-1] > width else "bilinear"
    resized = F.interpolate(t, size=(height, width), mode=mode)
    return resized.clamp(0, 1).contiguous().numpy().astype(np.float32)


def _restyle(x: np.ndarray, seed: int) -> np.ndarray:
    """Each image redrawn in another style: random rotation (±20°), shift (±10%), scale (0.85-1.15), and
    strokes thickened or thinned (a 3x3 max- or min-filter) on a third of the images each."""
    import torch
    import torch.nn.functional as F
    from torchvision.transforms.v2 import functional as TF

    rng = np.random.default_rng(seed)
    images = torch.from_numpy(x)
    out = torch.empty_like(images)
    height, width = images.shape[-2:]
    for i, image in enumerate(images):
        out[i] = TF.affine(
            image,
            angle=float(rng.uniform(-20, 20)),
            translate=[int(rng.integers(-1, 2)) * max(1, width // 10), int(rng.integers(-1, 2)) * max(1, height // 10)],
            scale=float(rng.uniform(0.85, 1.15)),
            shear=[0.0, 0.0],
            interpolation=TF.InterpolationMode.BILINEAR,
        )
    style = rng.integers(0, 3, len(out))
    thicker = F.max_pool2d(out, 3, stride=1, padding=1)
    thinner = -F.max_pool2d(-out, 3, stride=1, padding=1)
    out = torch.where(torch.from_numpy(style == 1)[:, None, None, None], thicker, out)
    out = torch.where(torch.from_numpy(style == 2)[:, None, None, None], thinner, out)
    return out.clamp(0, 1).contiguous().numpy().astype(np.float32)
