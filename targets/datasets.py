"""What every data source gives the runner: pools of examples, float32 in [0, 1] (NCHW), labels int64.

- `eval`: the evaluation examples, the same for every threat model;
- `attacker`: the attacker's own data (what a surrogate trains on when the judge's data is hidden);
- `judge`: the judge's training data, where it is known (a trained judge's; a foreign judge's only when the user
  names it);
- `operator`: the operator's own data, which sets a detector's threshold and trains its encoder;
- `honest`: held-out honest traffic for a detector's false-positive rate (None: the evaluation pool past the
  examples used, then the attacker's pool).

Data sources (`conf/data`, built by `_target_`) live in `targets/data/`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


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
    eval: Pool
    attacker: Pool
    judge: Pool | None
    """The judge's training data; None where it is not known (a foreign judge's, unless `data.judge_train`)."""
    class_names: tuple[str, ...]
    """The classes' names in label order: their number is the judge's number of outputs."""
    operator: Pool | None = None
    """The operator's own data (detector thresholds, encoders); None where the data names none."""
    honest: Pool | None = None
    """Held-out honest inputs; None: the evaluation pool past the examples used, then the attacker's pool."""
    contributors: np.ndarray | None = None
    """Who contributed each example of the judge's training pool (0 .. `data.contributors` - 1); None without one."""

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.eval.x.shape[1:])  # type: ignore[return-value]


def subsample(pool: Pool, fraction: float, seed: int) -> Pool:
    """A seeded random `fraction` of a pool (at least one example)."""
    if fraction >= 1.0:
        return pool
    keep = np.sort(np.random.default_rng(seed).permutation(len(pool))[: max(1, int(round(fraction * len(pool))))])
    return Pool(pool.x[keep], pool.y[keep])


def resize(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Images [N, C, H, W] as `shape` [channels, height, width]: colour to grey by the channels' mean, grey to colour
    by repeating it; area interpolation to shrink, bilinear to grow."""
    import torch
    import torch.nn.functional as F

    channels, height, width = shape
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if t.shape[1] != channels:
        t = t.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1)
    if t.shape[-2:] != (height, width):
        mode = "area" if t.shape[-1] > width else "bilinear"
        t = F.interpolate(t, size=(height, width), mode=mode)
    return t.clamp(0, 1).contiguous().numpy().astype(np.float32)


def split_among(n: int, parties: int, seed: int, shares=None) -> np.ndarray:
    """Each of `n` examples' contributor: `parties` shares, equal or in proportion to `shares` (the largest remainders
    rounded up), the examples dealt at random by `seed`."""
    weights = np.ones(parties) if shares is None else np.asarray(shares, dtype=float)
    exact = weights / weights.sum() * n
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]] += 1
    owners = np.repeat(np.arange(parties), counts)
    return owners[np.random.default_rng(seed).permutation(n)].astype(np.int64)
