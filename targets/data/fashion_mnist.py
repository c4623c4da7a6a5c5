"""Fashion-MNIST, from a local folder in torchvision's layout or of its four IDX files (Debian:
`apt-get install dataset-fashion-mnist`, then `data.root=/usr/share/datasets/fashion-mnist`)."""

from __future__ import annotations

from gavel.targets.data.torchvision_set import TorchvisionSet


class FashionMNIST(TorchvisionSet):
    option = "fashion_mnist"
    torchvision_class = "FashionMNIST"
    idx_set = "fashion_mnist"
