"""Proxy data (`surrogate.knowledge=proxy`): from another distribution than the judge's, labelled in the judge's
label space, the same size as the attacker's own pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gavel.targets.data.digits import digits_arrays
from gavel.targets.data.idx import as_arrays, idx_arrays
from gavel.targets.datasets import Pool, resize


def proxy_pool(attacker: Pool, proxy: str, root: str | None, seed: int) -> Pool:
    """`transformed`: the attacker's pool in other "handwriting" (rotated, shifted, rescaled, thicker or thinner
    strokes); `mnist` or `digits`: that set's images, resized to the attacker's (the data source says which proxies
    its classes allow)."""
    n = len(attacker)
    if proxy == "transformed":
        return Pool(restyle(attacker.x, seed), attacker.y)
    if proxy == "digits":
        x, y = digits_arrays()
    elif proxy == "mnist":
        x, y = _mnist_train(root)
    else:
        raise ValueError(f"surrogate.proxy={proxy!r}: allowed: transformed, digits, mnist")
    order = np.random.default_rng(seed).permutation(len(y))[:n]
    return Pool(resize(x[order], attacker.x.shape[1:]), y[order])


def _mnist_train(root: str | None) -> tuple[np.ndarray, np.ndarray]:
    import torchvision

    if root is None:
        raise FileNotFoundError("surrogate.proxy=mnist needs MNIST under surrogate.proxy_root (or GAVEL_DATA_ROOT)")
    folder = Path(root).expanduser()
    idx = idx_arrays(folder, "mnist")
    if idx is not None:  # MNIST's four IDX files in the folder itself
        return idx[0], idx[1]
    try:
        train = torchvision.datasets.MNIST(root=str(folder), train=True, download=False)
    except RuntimeError as error:
        raise FileNotFoundError(f"surrogate.proxy_root={root}: no MNIST files there ({error})") from error
    return as_arrays(train)


def restyle(x: np.ndarray, seed: int) -> np.ndarray:
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
