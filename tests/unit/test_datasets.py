"""Data pools: deterministic, disjoint, float32 in [0, 1], NCHW; torchvision sets load from a local folder."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest
from helpers.torchvision_files import write_cifar10, write_idx_set, write_mnist_style

from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.targets.data import idx
from gavel.targets.data.digits import POOLS
from gavel.targets.data.mnist import MNIST
from gavel.targets.data.torchvision_set import PoolLimits, TwoWaySplit


def data_spec(*overrides: str):
    """The data source of the config these overrides compose, as the typed config boundary builds it."""
    return RunSettings.from_config(compose_config(list(overrides))).data_instance


def load_dataset(source):
    return source.load()


def rows(pool) -> set[bytes]:
    return {x.tobytes() + y.tobytes() for x, y in zip(pool.x, pool.y)}


def test_digits_pools_are_disjoint_deterministic_and_well_formed():
    spec = data_spec("data=digits")
    data = load_dataset(spec)
    again = load_dataset(spec)
    pools = [getattr(data, p) for p in POOLS]
    assert sum(len(p) for p in pools) == 1797
    assert [len(p) for p in pools] == [898, 540, 359]
    for pool, twin in zip(pools, (getattr(again, p) for p in POOLS)):
        np.testing.assert_array_equal(pool.x, twin.x)
        assert pool.x.dtype == np.float32 and pool.y.dtype == np.int64
        assert pool.x.shape[1:] == (1, 8, 8) and 0.0 <= pool.x.min() and pool.x.max() <= 1.0
    # the digits set holds a few exact duplicate images; pools are disjoint by example, so allow only those
    overlap = len(rows(data.judge) & rows(data.eval)) + len(rows(data.attacker) & rows(data.eval))
    assert overlap <= 2
    other = load_dataset(data_spec("data=digits", "data.split_seed=1"))
    assert not np.array_equal(other.eval.x, data.eval.x)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_style_sets_load_from_a_local_torchvision_folder(tmp_path, name, folder):
    written = write_mnist_style(tmp_path, folder, n_train=40, n_test=12, rng=np.random.default_rng(0))
    spec = data_spec(f"data={name}", f"data.root={tmp_path}", "data.limit.eval=10")
    assert (spec.root, spec.split, spec.limit) == (str(tmp_path), TwoWaySplit(0.5, 0.5), PoolLimits(eval=10))
    data = load_dataset(spec)
    assert (len(data.judge), len(data.attacker), len(data.eval)) == (20, 20, 10)
    assert data.input_shape == (1, 28, 28) and data.n_classes == 10
    assert data.eval.x.dtype == np.float32 and data.eval.x.min() >= 0 and data.eval.x.max() <= 1
    train_images, train_labels = written["train"]
    by_image = {img.tobytes(): int(lbl) for img, lbl in zip(train_images, train_labels)}
    for x, y in zip(data.judge.x, data.judge.y):  # pixels and labels survive the round trip
        assert by_image[np.round(x[0] * 255).astype(np.uint8).tobytes()] == y
    assert not rows(data.judge) & rows(data.attacker)


def write_flat_idx(folder, n_train: int, n_test: int, rng) -> dict:
    """The four IDX files side by side, as MNIST's authors (and Debian's dataset-fashion-mnist) ship them: the
    training images gzipped, the rest not."""
    written = write_idx_set(folder, n_train, n_test, rng)
    plain = folder / "train-images-idx3-ubyte"
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    return written


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_style_sets_load_from_a_folder_of_the_four_idx_files(tmp_path, name):
    written = write_flat_idx(tmp_path, n_train=30, n_test=8, rng=np.random.default_rng(2))
    data = load_dataset(data_spec(f"data={name}", f"data.root={tmp_path}"))
    assert (len(data.judge), len(data.attacker), len(data.eval)) == (15, 15, 8)
    assert data.input_shape == (1, 28, 28) and data.n_classes == 10
    for pool, split in ((data.judge, "train"), (data.attacker, "train"), (data.eval, "t10k")):
        assert pool.x.dtype == np.float32 and pool.y.dtype == np.int64
        images, labels = written[split]
        by_image = {img.tobytes(): int(lbl) for img, lbl in zip(images, labels)}
        for x, y in zip(pool.x, pool.y):
            assert by_image[np.round(x[0] * 255).astype(np.uint8).tobytes()] == y
    assert not rows(data.judge) & rows(data.attacker)


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda path: path.write_bytes(b"\x00\x00\x0d\x03" + bytes(12)), "not an IDX file of unsigned bytes"),
        (lambda path: path.write_bytes(path.read_bytes()[:-5]), "values where its header says"),
        (lambda path: path.write_bytes(b"\x00\x00\x08\x03\x00"), "its header is cut short"),
    ],
    ids=["float values", "cut short", "header cut short"],
)
def test_a_damaged_idx_file_is_a_one_line_data_error(tmp_path, damage, says):
    write_flat_idx(tmp_path, n_train=4, n_test=2, rng=np.random.default_rng(3))
    damage(tmp_path / "t10k-images-idx3-ubyte")
    with pytest.raises(FileNotFoundError, match=f"data.root={tmp_path}: .*t10k-images-idx3-ubyte: .*{says}"):
        load_dataset(data_spec("data=fashion_mnist", f"data.root={tmp_path}"))


def test_a_gzipped_idx_file_that_is_not_gzip_is_a_data_error(tmp_path):
    write_flat_idx(tmp_path, n_train=4, n_test=2, rng=np.random.default_rng(3))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz: unreadable"):
        load_dataset(data_spec("data=mnist", f"data.root={tmp_path}"))


def test_cifar10_loads_from_a_local_torchvision_folder(tmp_path, monkeypatch):
    written = write_cifar10(tmp_path, n_per_batch=6, rng=np.random.default_rng(1), monkeypatch=monkeypatch)
    data = load_dataset(data_spec("data=cifar10", f"data.root={tmp_path}"))
    assert (len(data.judge), len(data.attacker), len(data.eval)) == (15, 15, 6)
    assert data.input_shape == (3, 32, 32) and data.n_classes == 10
    test_data, test_labels = written["test_batch"]
    expected = {d.tobytes(): lbl for d, lbl in zip(test_data, test_labels)}
    for x, y in zip(data.eval.x, data.eval.y):
        assert expected[np.round(x * 255).astype(np.uint8).tobytes()] == y


def test_missing_local_files_give_a_clear_error_without_downloading(tmp_path):
    spec = MNIST(root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="data.root=.*no MNIST files there.*data.download=true"):
        load_dataset(spec)
    assert not (tmp_path / "MNIST").exists()


def test_the_other_sets_idx_files_are_refused(tmp_path, monkeypatch):
    """MNIST's and Fashion-MNIST's files have the same names: Fashion-MNIST's are known by the hash of their
    training labels, MNIST's by their count of each digit (here both made to be the fixture's)."""
    written = write_flat_idx(tmp_path, n_train=30, n_test=8, rng=np.random.default_rng(4))
    labels = written["train"][1]
    monkeypatch.setattr(
        idx,
        "FASHION_TRAIN_LABELS_SHA256",
        hashlib.sha256(struct.pack(">II", 0x0801, len(labels)) + labels.tobytes()).hexdigest(),
    )
    with pytest.raises(FileNotFoundError, match="these are Fashion-MNIST's files; allowed: data=fashion_mnist"):
        load_dataset(data_spec("data=mnist", f"data.root={tmp_path}"))
    assert len(load_dataset(data_spec("data=fashion_mnist", f"data.root={tmp_path}")).eval) == 8
    monkeypatch.setattr(idx, "MNIST_TRAIN_COUNTS", tuple(np.bincount(labels, minlength=10).tolist()))
    with pytest.raises(FileNotFoundError, match="these are MNIST's files; allowed: data=mnist"):
        load_dataset(data_spec("data=fashion_mnist", f"data.root={tmp_path}"))


def test_a_gzipped_idx_file_with_a_damaged_stream_is_a_data_error(tmp_path):
    write_flat_idx(tmp_path, n_train=4, n_test=2, rng=np.random.default_rng(3))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    damaged = bytearray(path.read_bytes())
    damaged[10:14] = b"\xff\xff\xff\xff"  # the deflate stream, just past gzip's 10-byte header
    path.write_bytes(bytes(damaged))
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz: unreadable"):
        load_dataset(data_spec("data=mnist", f"data.root={tmp_path}"))
