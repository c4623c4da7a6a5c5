"""Blacklight (Li et al., USENIX Security 2022): query-based attacks ask about inputs that share most of their
pixels, so a query sharing many content fingerprints with one stored query is flagged.

A query's fingerprints: its pixels quantised (rounded to multiples of `quantization_step`, so a perturbation
smaller than half a step leaves a pixel that sits on a level, as blank and full pixels do, where it was), a window
of `window_size` consecutive values slid over the flattened quantised image every `stride` values, SHA-256 of each
window, and the `hashes_kept` largest distinct digests (a pseudo-random but consistent choice: two near-identical
queries keep the same windows). Its score is the largest fraction of its fingerprints shared with any one stored
query, found through an inverted index (digest -> stored queries) so that the cost grows with the query's
fingerprints and their holders, not with the history.
"""

from __future__ import annotations

import hashlib
from itertools import chain
from typing import Annotated

import numpy as np
from torch import nn

from attacks.params import PositiveInt, Range
from defenses.base import OperatorKit
from defenses.detection.base import DetectionDefense, History, HistoryDetector, Scope

Fingerprints = list[list[int]]
"""One list of digests per query (at most `hashes_kept`, fewer when the query has fewer distinct windows)."""


def fingerprints(x: np.ndarray, *, step: float, window: int, stride: int, kept: int) -> Fingerprints:
    """The fingerprints of each row of `x` (float32 in [0, 1], any shape per row)."""
    x = np.asarray(x, dtype=np.float32)
    levels = np.rint(x.reshape(len(x), int(np.prod(x.shape[1:]))) / step)
    # The narrowest integers that hold every level: a window of 20 one-byte levels is one SHA-256 block.
    levels = levels.astype(np.min_scalar_type(int(np.ceil(1.0 / step))))
    windows = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(levels, window, axis=1)[:, ::stride])
    rows, per_row = windows.shape[:2]
    blob, size = windows.tobytes(), window * windows.itemsize
    digests = b"".join([hashlib.sha256(blob[i : i + size]).digest() for i in range(0, len(blob), size)])
    # The first 8 bytes of a digest order digests as the whole digest does (ties have probability 2**-64) and
    # make them integers: cheap to sort here and to look up in the index.
    values = np.frombuffer(digests, dtype=">u8").reshape(rows, per_row, 4)[:, :, 0]
    ordered = np.sort(values, axis=1)[:, ::-1]
    distinct = np.ones(ordered.shape, dtype=bool)
    distinct[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    keep = distinct & (np.cumsum(distinct, axis=1) <= kept)
    return [row[mask].tolist() for row, mask in zip(ordered, keep)]


class HashIndex(History):
    """Digest -> the numbers of the stored queries holding it, in the order they were stored."""

    def __init__(self) -> None:
        self._postings: dict[int, list[int]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, prints: Fingerprints) -> None:
        _post(self._postings, prints, self._count)
        self._count += len(prints)

    def scores(self, prints: Fingerprints) -> np.ndarray:
        scores = np.full(len(prints), -np.inf)
        earlier: dict[int, list[int]] = {}  # digest -> this call's rows holding it, numbered after the stored
        for row, digests in enumerate(prints):
            number = self._count + row
            holders = [self._postings.get(digest, ()) for digest in digests]
            for digest in digests:  # this row joins the call's postings; it is taken out of the count below
                mine = earlier.get(digest)
                if mine is None:
                    earlier[digest] = mine = []
                holders.append(mine)
                mine.append(number)
            if number and digests:
                shared = np.bincount(np.fromiter(chain.from_iterable(holders), dtype=np.int64))
                shared[number] = 0
                scores[row] = shared.max() / len(digests)
        return scores


def _post(postings: dict[int, list[int]], prints: Fingerprints, first: int) -> None:
    """Record that query number first + i holds each digest of prints[i] (its digests are distinct)."""
    for number, digests in enumerate(prints, start=first):
        for digest in digests:
            holders = postings.get(digest)
            if holders is None:
                postings[digest] = [number]
            else:
                holders.append(number)


class BlacklightDetector(HistoryDetector):
    """Scores a query by the largest fraction of its fingerprints that one stored query shares."""

    def __init__(self, *, step: float, window: int, stride: int, kept: int, scope: Scope) -> None:
        super().__init__(scope=scope)
        self.step, self.window, self.stride, self.kept = step, window, stride, kept

    def features(self, x: np.ndarray) -> Fingerprints:
        return fingerprints(x, step=self.step, window=self.window, stride=self.stride, kept=self.kept)

    def new_history(self) -> HashIndex:
        return HashIndex()


class Blacklight(DetectionDefense):
    def __init__(
        self,
        *,
        quantization_step: Annotated[float, Range(above=0, maximum=1)] = 0.25,
        window_size: PositiveInt = 20,
        stride: PositiveInt = 1,
        hashes_kept: PositiveInt = 50,
        match_fraction: Annotated[float, Range(above=0, maximum=1)] = 0.5,
        **common,
    ) -> None:
        self.quantization_step = quantization_step
        self.window_size = window_size
        self.stride = stride
        self.hashes_kept = hashes_kept
        self.match_fraction = match_fraction
        super().__init__(**common)

    def detector(self, judge: nn.Module, operator: OperatorKit) -> BlacklightDetector:
        values = int(np.prod(operator.benign_x.shape[1:]))
        if self.window_size > values:
            raise ValueError(
                f"defense.window_size={self.window_size}: longer than the {values} values of one input; "
                f"allowed: 1 to {values}"
            )
        return BlacklightDetector(
            step=self.quantization_step,
            window=self.window_size,
            stride=self.stride,
            kept=self.hashes_kept,
            scope=self.scope,
        )

    def threshold(self, detector: BlacklightDetector, operator: OperatorKit) -> float:
        return self.match_fraction
