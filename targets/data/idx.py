"""MNIST's and Fashion-MNIST's four IDX files as their authors distribute them, gzipped or not: a `data.root`
holding them is read directly (Debian's `dataset-fashion-mnist` installs them in /usr/share/datasets/fashion-mnist)."""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np


class DataFilesError(FileNotFoundError):
    """The data set's files are there but cannot be read as it: reported as a missing folder is (one line naming
    `data.root`, exit status 2)."""


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

FASHION_TRAIN_LABELS_SHA256 = "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
"""Of Fashion-MNIST's train-labels-idx1-ubyte, decompressed: the two sets' files have the same names."""
MNIST_TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
"""MNIST's training images of each digit."""

IdxSet = Literal["mnist", "fashion_mnist"]


def idx_arrays(root: Path, which: IdxSet) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(train images, train labels, test images, test labels) from the IDX files in `root`, as `as_arrays` gives
    them; None when any of the four is missing. MNIST's and Fashion-MNIST's files have the same names: the other
    set's files are refused (Fashion-MNIST's by the hash of its training labels, MNIST's by its count of each
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
    _check_which_set(root, which, arrays[1])
    return tuple(arrays)


def _check_which_set(root: Path, which: IdxSet, train_labels: np.ndarray) -> None:
    labels = train_labels.astype(np.uint8)
    header = struct.pack(">II", 0x0801, len(labels))
    fashion = hashlib.sha256(header + labels.tobytes()).hexdigest() == FASHION_TRAIN_LABELS_SHA256
    mnist = tuple(np.bincount(labels, minlength=10).tolist()) == MNIST_TRAIN_COUNTS
    if which == "mnist" and fashion:
        raise DataFilesError(
            f"data.root={root}: these are Fashion-MNIST's files; allowed: data=fashion_mnist, or MNIST's"
        )
    if which == "fashion_mnist" and mnist:
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


def as_arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    """A torchvision data set's images as float32 NCHW in [0, 1] and its labels as int64."""
    data = np.asarray(dataset.data)
    if data.ndim == 3:  # MNIST-style (N, H, W) -> (N, 1, H, W)
        data = data[:, None, :, :]
    else:  # CIFAR-style (N, H, W, C) -> (N, C, H, W)
        data = data.transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(data, dtype=np.float32) / 255.0
    y = np.asarray(dataset.targets, dtype=np.int64)
    return x, y
