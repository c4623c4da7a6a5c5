"""PIHA (Choi et al., 2023): detection by perceptual image hashing. A query-based attack's queries look alike, and
a perceptual hash maps images that look alike to bit strings that differ in few bits; a query whose hash nearly
matches a stored one is flagged.

The hash is pHash's: the image in grey, resized to `resize` x `resize` with an anti-aliasing filter (the low-pass),
its 2-d DCT, the `block` x `block` lowest frequencies but the constant one (the mean brightness says nothing of
shape), each bit set where a coefficient exceeds their median. A query's score is the fraction of bits it shares
with the nearest stored hash, found by XOR and popcount over the whole history at once.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attacks.params import PositiveInt, Range
from defenses.base import OperatorKit
from defenses.detection.base import DetectionDefense, History, HistoryDetector, Scope

CALL_ROWS = 256
"""Rows of one call compared together: bounds the [rows, stored] distances however large the call."""
STORED_ROWS = 16_384
"""Stored hashes compared at once: bounds the same distances however long the history grows."""


@cache
def dct_basis(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: `basis @ signal` are the signal's n cosine coefficients, lowest first."""
    frequency = np.arange(n)[:, None]
    position = np.arange(n)[None, :]
    basis = np.cos(np.pi * (2 * position + 1) * frequency / (2 * n)) * np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


def perceptual_hashes(x: np.ndarray, *, resize: int, block: int) -> np.ndarray:
    """[rows, words] uint64: each row's block * block - 1 hash bits, packed and zero-padded to whole words."""
    grey = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).mean(dim=1, keepdim=True)
    if grey.shape[-2:] != (resize, resize):
        grey = F.interpolate(grey, size=(resize, resize), mode="bilinear", antialias=True, align_corners=False)
    low = dct_basis(resize)[:block]
    coefficients = (low @ grey[:, 0].numpy() @ low.T).reshape(len(x), block * block)[:, 1:]
    bits = coefficients > np.median(coefficients, axis=1, keepdims=True)
    packed = np.packbits(bits, axis=1)
    words = math.ceil(packed.shape[1] / 8)
    padded = np.zeros((len(x), 8 * words), dtype=np.uint8)
    padded[:, : packed.shape[1]] = packed
    return padded.view(np.uint64)


def hamming(a: np.ndarray, b_words: np.ndarray) -> np.ndarray:
    """[len(a), n] numbers of differing bits between the packed hashes `a` [rows, words] and `b_words` [words, n].

    The second set is word-major, and the distance is summed word by word: each step is then an XOR and a popcount
    over whole contiguous rows, about twice as fast as a reduction over a short last axis of words."""
    small = 64 * a.shape[1] <= np.iinfo(np.uint8).max  # up to 3 words, a distance fits a byte
    distances = np.zeros((len(a), b_words.shape[1]), dtype=np.uint8 if small else np.uint16)
    for word in range(a.shape[1]):
        distances += np.bitwise_count(a[:, word, None] ^ b_words[word])
    return distances


class BitHistory(History):
    """Stored packed hashes, word-major ([words, stored]: see `hamming`), in a preallocated array that doubles
    when full."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self._words: np.ndarray | None = None
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def stored(self) -> np.ndarray:
        return np.zeros((1, 0), dtype=np.uint64) if self._words is None else self._words[:, : self._count]

    def add(self, hashes: np.ndarray) -> None:
        needed = self._count + len(hashes)
        if self._words is None:
            self._words = np.empty((hashes.shape[1], max(64, 2 * needed)), dtype=np.uint64)
        elif needed > self._words.shape[1]:
            grown = np.empty((self._words.shape[0], max(2 * self._words.shape[1], needed)), dtype=np.uint64)
            grown[:, : self._count] = self.stored
            self._words = grown
        self._words[:, self._count : needed] = hashes.T
        self._count = needed

    def scores(self, hashes: np.ndarray) -> np.ndarray:
        scores = np.full(len(hashes), -np.inf)
        for start in range(0, len(hashes), CALL_ROWS):
            rows = hashes[start : start + CALL_ROWS]
            within = hamming(rows, np.ascontiguousarray(rows.T)).astype(np.float64)
            within[np.triu_indices(len(rows))] = np.inf  # row i may not see itself or the rows after it
            nearest = within.min(axis=1, initial=np.inf)
            # The stored hashes, then the call's earlier blocks, which come before every row of this one.
            for others in (self.stored, np.ascontiguousarray(hashes[:start].T)):
                for first in range(0, others.shape[1], STORED_ROWS):
                    closest = hamming(rows, others[:, first : first + STORED_ROWS]).min(axis=1)
                    nearest = np.minimum(nearest, closest)
            scores[start : start + len(rows)] = 1.0 - nearest / self.bits  # -inf where there was nothing to compare
        return scores


class PihaDetector(HistoryDetector):
    """Scores a query by the fraction of hash bits it shares with the nearest stored hash."""

    def __init__(self, *, resize: int, block: int, scope: Scope) -> None:
        super().__init__(scope=scope)
        self.resize, self.block = resize, block

    def features(self, x: np.ndarray) -> np.ndarray:
        return perceptual_hashes(x, resize=self.resize, block=self.block)

    def new_history(self) -> BitHistory:
        return BitHistory(self.block * self.block - 1)


class Piha(DetectionDefense):
    def __init__(
        self,
        *,
        resize: PositiveInt = 32,
        block: Annotated[int, Range(minimum=2)] = 10,
        match_fraction: Annotated[float, Range(above=0, maximum=1)] = 0.89,
        **common,
    ) -> None:
        self.resize = resize
        self.block = block
        self.match_fraction = match_fraction
        super().__init__(**common)
        if block > resize:
            raise ValueError(
                f"defense.block={block}: more frequencies than the {resize}x{resize} resized image has; "
                f"allowed: 2 to {resize} (defense.resize)"
            )

    def detector(self, judge: nn.Module, operator: OperatorKit) -> PihaDetector:
        return PihaDetector(resize=self.resize, block=self.block, scope=self.scope)

    def threshold(self, detector: PihaDetector, operator: OperatorKit) -> float:
        return self.match_fraction
