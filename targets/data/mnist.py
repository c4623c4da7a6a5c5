"""MNIST, from a local folder in torchvision's layout or of its four IDX files as LeCun's site ships them."""

from __future__ import annotations

from gavel.targets.data.torchvision_set import TorchvisionSet


class MNIST(TorchvisionSet):
    option = "mnist"
    torchvision_class = "MNIST"
    idx_set = "mnist"
    proxies = ("transformed", "digits")
