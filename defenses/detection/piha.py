"""PIHA (Choi et al., 2023): detection by perceptual image hashing. A query-based attack's queries look alike, and
a perceptual hash maps images that look alike to bit strings that differ in few bits; a query whose hash nearly
matches a stored one is flagged.

The hash is pHash's: the image in grey, resized to `resize` x `resize` with an anti-aliasing filter (the low-pass),
its 2-d DCT, the `block` x `block` lowest frequencies but the constant one (the mean brightness says nothing of
shape) and any the resize leaves empty, each bit set where a coefficient exceeds their median.

A query's score is the fraction of bits it shares with an earlier query, taken at its `matches`-th nearest (the
nearest, as the paper, when `matches` is 1; where fewer earlier queries were sent, the missing ones share no bit).
An honest user who sends a photo again, re-framed or in other light, sends one near-duplicate of one earlier
query; a query-based attack sends query after query around the same point, so each new one is near many earlier
ones. Distances are found by one integer matrix product over the whole history at once (`agreements`).
"""

from __future__ import annotations

import math
from functools import cache
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gavel.defenses.base import OperatorKit
from gavel.defenses.detection.base import DetectionDefense, History, HistoryDetector, Scope, Scratch
from gavel.targets.params import PositiveInt, Range

CALL_ROWS = 256
"""Rows of one call compared together: bounds the [rows, stored] distances however large the call."""
STORED_ROWS = 4_096
"""Stored hashes compared at once: bounds the same distances, and keeps them in cache, however long the history."""


EMPTY = 1e-9
"""A frequency whose coefficient is at most this for every image in [0, 1] is one the resize leaves empty."""


@cache
def dct_basis(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: `basis @ signal` are the signal's n cosine coefficients, lowest first."""
    frequency = np.arange(n)[:, None]
    position = np.arange(n)[None, :]
    basis = np.cos(np.pi * (2 * position + 1) * frequency / (2 * n)) * np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    return basis


def low_frequencies(n: int, resize: int, block: int) -> torch.Tensor:
    """[block, n] float64: the `block` lowest DCT coefficients of a length-n signal resized to `resize` values with
    pHash's anti-aliased bilinear filter. Resizing and the DCT are linear and separable, so one such matrix per
    axis does both, for every image at once. Found by resizing the unit signals (two columns wide: a width of one
    takes another path in torch)."""
    unit = torch.eye(n, dtype=torch.float64).reshape(n, 1, n, 1).expand(n, 1, n, 2)
    resized = F.interpolate(unit, size=(resize, 2), mode="bilinear", antialias=True, align_corners=False)
    return torch.from_numpy(dct_basis(resize)[:block]) @ resized[:, 0, :, 0].T


@cache
def hashed_frequencies(
    height: int, width: int, resize: int, block: int
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(rows [block, height], columns [block, width], hashed [block * block] bool): the coefficients of the block
    of an image are `rows @ image @ columns.T`, and a bit is kept for each frequency marked hashed: all but the
    constant one (the mean brightness says nothing of shape) and those the resize leaves empty (upsampling 8
    values to 32 leaves the 9th frequency at 0 for every image: its bit would be rounding noise)."""
    rows, columns = low_frequencies(height, resize, block), low_frequencies(width, resize, block)
    hashed = (rows.abs().amax(1) > EMPTY)[:, None] & (columns.abs().amax(1) > EMPTY)[None, :]
    hashed[0, 0] = False
    return rows, columns, hashed.ravel().numpy()


def hash_bits(shape: tuple[int, ...], *, resize: int, block: int) -> int:
    """The number of bits in the hash of an image of `shape` (C, H, W)."""
    return int(hashed_frequencies(shape[-2], shape[-1], resize, block)[2].sum())


def perceptual_hashes(x: np.ndarray, *, resize: int, block: int) -> np.ndarray:
    """[rows, words] uint64: each row's `hash_bits` bits, packed and zero-padded to whole words."""
    grey = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).double().mean(dim=1)
    rows, columns, hashed = hashed_frequencies(*grey.shape[-2:], resize, block)
    coefficients = (rows @ grey @ columns.T).reshape(len(x), block * block).numpy()[:, hashed]
    bits = coefficients > np.median(coefficients, axis=1, keepdims=True)
    packed = np.packbits(bits, axis=1)
    words = math.ceil(packed.shape[1] / 8)
    padded = np.zeros((len(x), 8 * words), dtype=np.uint8)
    padded[:, : packed.shape[1]] = packed
    return padded.view(np.uint64)


def signs(hashes: np.ndarray, bits: int) -> torch.Tensor:
    """[rows, bits] int8: each of the `bits` bits of the packed `hashes` as +1 (set) or -1 (clear). The product of
    two such rows is the number of bits they share less the number they do not: bits - 2 x their Hamming
    distance."""
    unpacked = np.unpackbits(hashes.view(np.uint8), axis=1, count=bits).view(np.int8)
    return torch.from_numpy(2 * unpacked - 1)


def agreements(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, scratch: Scratch) -> np.ndarray:
    """[len(a), len(b)] (as `dtype`, in `scratch`): bits - 2 x the Hamming distance of each pair of rows of the sign
    rows `a` and `b`. One int8 matrix product with int32 sums: exact, and several times faster on a CPU than an XOR
    and a popcount per pair and word (the integer product is torch's `_int_mm`)."""
    shape = (len(a), len(b))
    products = torch._int_mm(a, b.T, out=scratch.take("products", shape, torch.int32, a.device))
    return scratch.take("agreements", shape, dtype, a.device).copy_(products).numpy()


def largest_per_row(values: np.ndarray, m: int) -> np.ndarray:
    """[rows, m]: the m largest entries of each row of `values` (which is overwritten), the smallest value of its
    type where a row has fewer. m arg-maximum passes: far cheaper than a partition for the few m used."""
    missing = np.iinfo(values.dtype).min
    if m == 1:
        return values.max(axis=1, keepdims=True, initial=missing)
    rows = np.arange(len(values))
    found = np.full((len(values), m), missing, dtype=values.dtype)
    for j in range(min(m, values.shape[1])):
        at = values.argmax(axis=1)
        found[:, j] = values[rows, at]
        values[rows, at] = missing
    return found


class BitHistory(History):
    """Stored hashes as sign rows (`signs`), in a preallocated tensor that doubles when full. A query's score: the
    fraction of bits it shares with its `matches`-th nearest earlier query (0 where there are fewer)."""

    def __init__(self, bits: int, matches: int, scratch: Scratch | None = None) -> None:
        self.bits = bits
        self.matches = matches
        self.scratch = scratch or Scratch()
        # Agreements lie in [-bits, bits]: the narrowest type that also holds a value below them ("no query").
        self.dtype = torch.int8 if bits < 128 else torch.int16
        self._signs: torch.Tensor | None = None
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def stored(self) -> torch.Tensor:
        return torch.zeros((0, self.bits), dtype=torch.int8) if self._signs is None else self._signs[: self._count]

    def add(self, hashes: np.ndarray) -> None:
        needed = self._count + len(hashes)
        if self._signs is None:
            self._signs = torch.empty((max(64, 2 * needed), self.bits), dtype=torch.int8)
        elif needed > len(self._signs):
            grown = torch.empty((max(2 * len(self._signs), needed), self.bits), dtype=torch.int8)
            grown[: self._count] = self.stored
            self._signs = grown
        self._signs[self._count : needed] = signs(hashes, self.bits)
        self._count = needed

    def scores(self, hashes: np.ndarray) -> np.ndarray:
        scores = np.full(len(hashes), -np.inf)
        call = signs(hashes, self.bits)
        for start in range(0, len(hashes), CALL_ROWS):
            rows = call[start : start + CALL_ROWS]
            within = agreements(rows, rows, self.dtype, self.scratch)
            within[np.triu_indices(len(rows))] = np.iinfo(within.dtype).min  # not itself nor the rows after it
            best = [largest_per_row(within, self.matches)]
            # The stored hashes, then the call's earlier blocks, which come before every row of this one.
            for others in (self.stored, call[:start]):
                for first in range(0, len(others), STORED_ROWS):
                    agreeing = agreements(rows, others[first : first + STORED_ROWS], self.dtype, self.scratch)
                    best.append(largest_per_row(agreeing, self.matches))
            candidates = np.concatenate(best, axis=1)
            mth = np.partition(candidates, -self.matches, axis=1)[:, -self.matches].astype(np.int64)
            compared = self._count + start + np.arange(len(rows)) > 0
            shared = 1.0 - np.minimum((self.bits - mth) // 2, self.bits) / self.bits
            scores[start : start + len(rows)] = np.where(compared, shared, -np.inf)
        return scores


class PihaDetector(HistoryDetector):
    """Scores a query by the fraction of hash bits it shares with its `matches`-th nearest earlier query."""

    def __init__(self, *, resize: int, block: int, matches: int, shape: tuple[int, ...], scope: Scope) -> None:
        super().__init__(scope=scope)
        self.resize, self.block, self.matches = resize, block, matches
        self.bits = hash_bits(shape, resize=resize, block=block)

    def features(self, x: np.ndarray) -> np.ndarray:
        return perceptual_hashes(x, resize=self.resize, block=self.block)

    def new_history(self) -> BitHistory:
        return BitHistory(self.bits, self.matches, self.scratch)


class Piha(DetectionDefense):
    def __init__(
        self,
        *,
        resize: PositiveInt = 32,
        block: Annotated[int, Range(minimum=2)] = 10,
        match_fraction: Annotated[float, Range(above=0, maximum=1)] = 0.89,
        matches: PositiveInt = 3,
        **common,
    ) -> None:
        self.resize = resize
        self.block = block
        self.match_fraction = match_fraction
        self.matches = matches
        super().__init__(**common)
        if block > resize:
            raise ValueError(
                f"defense.block={block}: more frequencies than the {resize}x{resize} resized image has; "
                f"allowed: 2 to {resize} (defense.resize)"
            )

    def detector(self, judge: nn.Module, operator: OperatorKit) -> PihaDetector:
        return PihaDetector(
            resize=self.resize,
            block=self.block,
            matches=self.matches,
            shape=operator.benign_x.shape[1:],
            scope=self.scope,
        )

    def threshold(self, detector: PihaDetector, operator: OperatorKit) -> float:
        return self.match_fraction
