"""Small files in torchvision's on-disk formats, written by tests (nothing is downloaded)."""

from __future__ import annotations

import hashlib
import pickle
import struct

import numpy as np
import torchvision


def write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_idx_set(directory, n_train: int, n_test: int, rng) -> dict:
    """MNIST's four IDX files (random 28x28 images and labels) in `directory`; returns split -> (images, labels)."""
    written = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(directory / f"{split}-images-idx3-ubyte", images)
        write_idx(directory / f"{split}-labels-idx1-ubyte", labels)
        written[split] = (images, labels)
    return written


def write_mnist_style(root, folder: str, n_train: int, n_test: int, rng) -> dict:
    """The IDX files in torchvision's layout for the class named `folder` (MNIST, FashionMNIST)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    return write_idx_set(raw, n_train, n_test, rng)


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar10(root, n_per_batch: int, rng, monkeypatch) -> dict:
    """torchvision's CIFAR-10 layout; the class's MD5 list is pointed at these files' checksums."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = {}
    for name in names:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch).tolist()
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": labels}))
        written[name] = (data, labels)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": classes}))
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[n, md5(folder / n)] for n in names[:5]])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(folder / "batches.meta")})
    return written
