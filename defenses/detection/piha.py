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
ones. Distances are found by XOR and popcount over the whole history at once.
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


def hamming(a: np.ndarray, b_words: np.ndarray) -> np.ndarray:
    """[len(a), n] numbers of differing bits between the packed hashes `a` [rows, words] and `b_words` [words, n].

    The second set is word-major, and the distance is summed word by word: each step is then an XOR and a popcount
    over whole contiguous rows, about twice as fast as a reduction over a short last axis of words."""
    small = 64 * a.shape[1] <= np.iinfo(np.uint8).max  # up to 3 words, a distance fits a byte
    distances = np.empty((len(a), b_words.shape[1]), dtype=np.uint8 if small else np.uint16)
    word = np.empty(distances.shape, dtype=np.uint64)
    np.bitwise_count(np.bitwise_xor(a[:, 0, None], b_words[0], out=word), out=distances)
    if a.shape[1] > 1:
        count = np.empty_like(distances)
        for w in range(1, a.shape[1]):
            distances += np.bitwise_count(np.bitwise_xor(a[:, w, None], b_words[w], out=word), out=count)
    return distances


def smallest_per_row(distances: np.ndarray, m: int) -> np.ndarray:
    """[rows, m]: the m smallest entries of each row of `distances` (which is overwritten), the largest value of
    its type where a row has fewer. m arg-minimum passes: far cheaper than a partition for the few m used."""
    if m == 1:
        return distances.min(axis=1, keepdims=True, initial=np.iinfo(distances.dtype).max)
    rows = np.arange(len(distances))
    found = np.full((len(distances), m), np.iinfo(distances.dtype).max, dtype=distances.dtype)
    for j in range(min(m, distances.shape[1])):
        at = distances.argmin(axis=1)
        found[:, j] = distances[rows, at]
        distances[rows, at] = np.iinfo(distances.dtype).max
    return found


class BitHistory(History):
    """Stored packed hashes, word-major ([words, stored]: see `hamming`), in a preallocated array that doubles
    when full. A query's score: the fraction of bits it shares with its `matches`-th nearest earlier query (0
    where there are fewer)."""

    def __init__(self, bits: int, matches: int) -> None:
        self.bits = bits
        self.matches = matches
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
        call = np.ascontiguousarray(hashes.T)
        for start in range(0, len(hashes), CALL_ROWS):
            rows = hashes[start : start + CALL_ROWS]
            within = hamming(rows, call[:, start : start + len(rows)])
            within[np.triu_indices(len(rows))] = np.iinfo(within.dtype).max  # not itself nor the rows after it
            nearest = [smallest_per_row(within, self.matches)]
            # The stored hashes, then the call's earlier blocks, which come before every row of this one.
            for others in (self.stored, call[:, :start]):
                for first in range(0, others.shape[1], STORED_ROWS):
                    distances = hamming(rows, others[:, first : first + STORED_ROWS])
                    nearest.append(smallest_per_row(distances, self.matches))
            candidates = np.concatenate(nearest, axis=1)
            mth = np.partition(candidates, self.matches - 1, axis=1)[:, self.matches - 1]
            compared = self._count + start + np.arange(len(rows)) > 0
            shared = 1.0 - np.minimum(mth, self.bits) / self.bits
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
        return BitHistory(self.bits, self.matches)


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
