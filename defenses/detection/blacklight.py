"""Blacklight (Li et al., USENIX Security 2022): query-based attacks ask about inputs that share most of their
pixels, so a query sharing many content fingerprints with earlier queries is flagged.

A query's fingerprints: its pixels quantised (rounded to multiples of `quantization_step`, so a perturbation
smaller than half a step leaves a pixel that sits on a level, as blank and full pixels do, where it was), a window
of `window_size` consecutive values slid over the flattened quantised image every `stride` values, SHA-256 of each
window, and the `hashes_kept` largest distinct digests (a pseudo-random but consistent choice: two near-identical
queries keep the same windows).

Its score: the fraction of its fingerprints that an earlier query shares, taken at the `matches`-th best earlier
query (the best one, as the paper, when `matches` is 1). An honest user who sends a photo again, re-framed or in
other light, sends one near-duplicate of one earlier query; a query-based attack sends query after query around
the same point, so each new one nearly matches many earlier ones. Earlier queries that share nothing, and those
missing when fewer than `matches` were sent, count as sharing no fingerprint.

The search goes through an inverted index (digest -> the stored queries holding it) kept as sorted arrays, so its
cost grows with the call's fingerprints and their holders, not with the history. The digests of the windows
already hashed are remembered (`DigestMemo`): hashing takes a Python call per window, most of the cost of
fingerprinting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from gavel.defenses.base import OperatorKit
from gavel.defenses.detection.base import DetectionDefense, History, HistoryDetector, Scope
from gavel.targets.params import PositiveInt, Range

CALL_ROWS = 256
"""Rows of one call compared with each other at once: bounds their [rows, rows] overlaps however large the call."""
MERGE_RATIO = 8
"""How much larger than a new run of postings the run before it may be and still be merged with it."""
MEMO_WINDOWS = 1 << 20
"""Windows whose digests a detector remembers, at most (16 MB): an attack's queries repeat nearly all their
windows, an honest stream of one domain many."""


@dataclass(frozen=True)
class Fingerprints:
    """The fingerprints of a batch of queries: query i's distinct digests (at most `hashes_kept`, fewer when it has
    fewer distinct windows) are `digests[offsets[i]:offsets[i + 1]]`, each the first 8 bytes of the SHA-256 digest
    read as an integer (they order digests as the whole digest does; ties have probability 2**-64)."""

    digests: np.ndarray  # uint64 [all the queries' digests]
    offsets: np.ndarray  # int64 [queries + 1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, rows: slice) -> Fingerprints:
        start, stop, step = rows.indices(len(self))
        if step != 1:
            raise ValueError("fingerprints are sliced in order")
        stop = max(start, stop)
        if start == 0 and stop == len(self):
            return self  # with what was computed of it (`by_digest`): a call screened whole is stored whole
        first = self.offsets[start]
        return Fingerprints(self.digests[first : self.offsets[stop]], self.offsets[start : stop + 1] - first)

    @cached_property
    def by_digest(self) -> tuple[np.ndarray, np.ndarray]:
        """(the digests sorted, the query holding each): sorted once, for scoring the queries and for storing them."""
        order = np.argsort(self.digests)
        return self.digests[order], self.holders()[order]

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def holders(self) -> np.ndarray:
        """The query (0 .. len - 1) each digest belongs to."""
        return np.repeat(np.arange(len(self)), self.sizes())

    def row(self, i: int) -> np.ndarray:
        return self.digests[self.offsets[i] : self.offsets[i + 1]]


def fingerprints(
    x: np.ndarray, *, step: float, window: int, stride: int, kept: int, memo: DigestMemo | None = None
) -> Fingerprints:
    """The fingerprints of each row of `x` (float32 in [0, 1], any shape per row); `memo` remembers the digests of
    the windows hashed."""
    x = np.asarray(x, dtype=np.float32)
    levels = np.rint(x.reshape(len(x), int(np.prod(x.shape[1:]))) / step)
    # The narrowest integers that hold every level: a window of 20 one-byte levels is one SHA-256 block.
    levels = levels.astype(np.min_scalar_type(int(np.ceil(1.0 / step))))
    windows = np.ascontiguousarray(sliding_window_view(levels, window, axis=1)[:, ::stride])
    rows, per_row = windows.shape[:2]
    memo = DigestMemo(step, window) if memo is None else memo
    ordered = np.sort(memo.digests(windows.reshape(rows * per_row, window)).reshape(rows, per_row), axis=1)[:, ::-1]
    distinct = np.ones(ordered.shape, dtype=bool)
    distinct[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    keep = distinct & (np.cumsum(distinct, axis=1) <= kept)
    return Fingerprints(ordered[keep], np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int64))


def sha256_values(windows: np.ndarray) -> np.ndarray:
    """The first 8 bytes of SHA-256 of the bytes of each row of `windows`, as uint64 (one Python call per row: the
    cost here, not the hashing)."""
    chunks = np.ascontiguousarray(windows).view(f"V{windows.shape[1] * windows.itemsize}").ravel().tolist()
    return np.frombuffer(b"".join([hashlib.sha256(chunk).digest() for chunk in chunks]), dtype=">u8")[::4].copy()


class DigestMemo:
    """The digests of the windows already hashed, by the window's number in base `levels` (exact while it fits in
    63 bits; past that, nothing is remembered). An attack's queries repeat nearly all their windows, honest traffic
    of one domain many; at most `MEMO_WINDOWS` are kept. Two sorted tables: the newest digests go to a small one,
    merged into the large one when it grows past `1 / MERGE_RATIO` of it, so that adding a few is cheap."""

    def __init__(self, step: float, window: int) -> None:
        levels = int(np.ceil(1.0 / step)) + 1
        self._place = levels ** np.arange(window, dtype=np.int64) if levels**window < 2**63 else None
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64))
        self._tables = [empty, empty]  # (sorted codes, their digests): the large one, the recent one

    def __len__(self) -> int:
        return sum(len(codes) for codes, _ in self._tables)

    def digests(self, windows: np.ndarray) -> np.ndarray:
        """`sha256_values(windows)`, hashing once each distinct window not remembered."""
        if self._place is None:
            return sha256_values(windows)
        codes = windows.astype(np.int64) @ self._place
        distinct, inverse = _distinct(codes)
        values = np.zeros(len(distinct), dtype=np.uint64)
        known = np.zeros(len(distinct), dtype=bool)
        for table_codes, table_values in self._tables:
            at = np.searchsorted(table_codes, distinct)
            found = at < len(table_codes)
            found[found] = table_codes[at[found]] == distinct[found]
            values[found] = table_values[at[found]]
            known |= found
        new = np.flatnonzero(~known)
        if len(new):
            one_each = np.empty(len(distinct), dtype=np.int64)
            one_each[inverse] = np.arange(len(codes))  # a window of each distinct code
            values[new] = sha256_values(windows[one_each[new]])
            self._remember(distinct[new], values[new])
        return values[inverse]

    def _remember(self, codes: np.ndarray, values: np.ndarray) -> None:
        if len(self) >= MEMO_WINDOWS:
            return
        (large_codes, large_values), (recent_codes, recent_values) = self._tables
        at = np.searchsorted(recent_codes, codes)
        recent_codes, recent_values = np.insert(recent_codes, at, codes), np.insert(recent_values, at, values)
        if MERGE_RATIO * len(recent_codes) < len(large_codes):
            self._tables[1] = (recent_codes, recent_values)
            return
        merged = np.concatenate([large_codes, recent_codes])
        order = np.argsort(merged, kind="stable")  # timsort: two sorted runs merged in one linear pass
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64))
        self._tables = [(merged[order], np.concatenate([large_values, recent_values])[order]), empty]


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct values, sorted; the index of each value among them): `np.unique`'s, by an unstable sort."""
    order = np.argsort(values)
    ordered = values[order]
    first = np.ones(len(values), dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    inverse = np.empty(len(values), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return ordered[first], inverse


class _Postings:
    """(digest, query number) pairs sorted by digest: one sorted run of a `HashIndex`."""

    def __init__(self, digests: np.ndarray, numbers: np.ndarray) -> None:
        self.digests, self.numbers = digests, numbers
        first = np.ones(len(digests), dtype=bool)
        np.not_equal(digests[1:], digests[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        self.keys = digests[starts]
        self.bounds = np.append(starts, len(digests))  # the pairs of keys[i] are bounds[i] .. bounds[i + 1] - 1

    @classmethod
    def of(cls, prints: Fingerprints, first: int) -> _Postings:
        """The postings of `prints`, its queries numbered from `first`."""
        digests, holders = prints.by_digest
        return cls(digests, holders + first)

    def __len__(self) -> int:
        return len(self.digests)

    def merged(self, other: _Postings) -> _Postings:
        """The two runs as one, `other`'s postings of a digest after this one's."""
        at = np.searchsorted(self.digests, other.digests, side="right") + np.arange(len(other))
        mine = np.ones(len(self) + len(other), dtype=bool)
        mine[at] = False
        digests, numbers = np.empty(len(mine), dtype=self.digests.dtype), np.empty(len(mine), dtype=self.numbers.dtype)
        digests[at], digests[mine] = other.digests, self.digests
        numbers[at], numbers[mine] = other.numbers, self.numbers
        return _Postings(digests, numbers)

    def holders(self, digests: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each posting of each of `digests` (sorted, so that the search walks the keys in order) held by
        `rows`: (the row, the number of the query posted)."""
        if not len(self.keys):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        at = np.searchsorted(self.keys, digests)
        found = self.keys[np.minimum(at, len(self.keys) - 1)] == digests
        at = at[found]
        first, count = self.bounds[at], self.bounds[at + 1] - self.bounds[at]
        pairs = np.repeat(first - (np.cumsum(count) - count), count) + np.arange(count.sum())
        return np.repeat(rows[found], count), self.numbers[pairs]


class HashIndex(History):
    """Digest -> the numbers of the stored queries holding it: a few sorted runs of postings, the newest smallest.
    A new run is merged into the one before it while that one is at most `MERGE_RATIO` times larger: few runs to
    search, and each posting copied a few times over the history's growth."""

    def __init__(self, matches: int) -> None:
        self.matches = matches
        self._runs: list[_Postings] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, prints: Fingerprints) -> None:
        run = _Postings.of(prints, self._count)
        while self._runs and len(self._runs[-1]) <= MERGE_RATIO * len(run):
            run = self._runs.pop().merged(run)
        if len(run):
            self._runs.append(run)
        self._count += len(prints)

    def scores(self, prints: Fingerprints) -> np.ndarray:
        scores = np.full(len(prints), -np.inf)
        earlier: list[_Postings] = []  # the call's rows before the current block, numbered after the stored
        for start in range(0, len(prints), CALL_ROWS):
            block = prints[start : start + CALL_ROWS]
            row, shared = _shared_with(block, self._runs + earlier)
            sizes = block.sizes()
            # counts[r, c - 1]: the earlier queries sharing at least c of row r's digests, for c = 1 .. the most
            width = int(sizes.max(initial=0))
            holding = np.bincount(row * (width + 1) + shared, minlength=len(block) * (width + 1))
            counts = np.cumsum(holding.reshape(len(block), width + 1)[:, :0:-1], axis=1)[:, ::-1]
            # the matches-th largest number of shared digests: the largest c that `matches` earlier queries reach
            best = (counts >= self.matches).sum(axis=1)
            compared = self._count + start + np.arange(len(block)) > 0
            rows = np.flatnonzero(compared & (sizes > 0))
            scores[start + rows] = best[rows] / sizes[rows]
            if start + CALL_ROWS < len(prints):
                earlier = [_Postings.of(prints[: start + CALL_ROWS], self._count)]
        return scores


def _shared_with(block: Fingerprints, runs: list[_Postings]) -> tuple[np.ndarray, np.ndarray]:
    """(row, digests shared) for each row of `block` and each query before it that shares any: in `runs`, or an
    earlier row of the block."""
    digests, rows = block.by_digest
    pairs = [run.holders(digests, rows) for run in runs]
    row = np.concatenate([np.zeros(0, np.int64)] + [held_by for held_by, _ in pairs])
    number = np.concatenate([np.zeros(0, np.int64)] + [posted for _, posted in pairs])
    found_rows, found_shared = _pair_counts(row, number)  # one (row, query) per digest shared
    # Within the block: the rows holding each digest that two or more of them hold.
    first = np.ones(len(digests), dtype=bool)
    first[1:] = digests[1:] != digests[:-1]
    group = np.cumsum(first) - 1
    holding = np.bincount(group)
    common = holding[group] > 1
    if common.any():
        if int((holding * (holding - 1)).sum()) // 2 <= len(block) ** 2:
            later, shared = _shared_in_groups(np.flatnonzero(common), np.flatnonzero(first), group, rows)
        else:  # many rows share some digests (a run of near-identical queries): overlapped by one product
            column = np.unique(group[common], return_inverse=True)[1]
            incidence = torch.zeros((len(block), int(column.max()) + 1))
            incidence[rows[common], column] = 1.0
            # torch's product, on the operator's threads (numpy's BLAS may spin threads of its own)
            overlap = torch.tril(incidence @ incidence.T, -1).numpy()  # exact: integers far below 2**24
            later, before = np.nonzero(overlap)
            shared = overlap[later, before].astype(np.int64)
        found_rows, found_shared = np.concatenate([found_rows, later]), np.concatenate([found_shared, shared])
    return found_rows, found_shared


def _pair_counts(row: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, count) for each distinct (row, other) pair in the two arrays, with how many times it occurs."""
    span = int(other.max(initial=0)) + 1
    keys = row * span + other
    if int(row.max(initial=0)) * span + span < 2**31:
        keys = keys.astype(np.int32)  # half the bytes to sort
    pair, count = np.unique(keys, return_counts=True)
    return pair.astype(np.int64) // span, count


def _shared_in_groups(
    entries: np.ndarray, starts: np.ndarray, group: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(later row, digests shared) for each two rows of a block that share a digest, from its digests sorted: the
    `entries` in groups of two or more equal digests, the start of each group (`starts`), each entry's `group`,
    and the row holding each entry (a row holds a digest once). Each entry is paired with the entries before it
    in its group."""
    before = entries - starts[group[entries]]
    earlier = np.repeat(starts[group[entries]] - np.cumsum(before) + before, before) + np.arange(before.sum())
    one, two = rows[np.repeat(entries, before)], rows[earlier]
    return _pair_counts(np.maximum(one, two), np.minimum(one, two))


class BlacklightDetector(HistoryDetector):
    """Scores a query by the fraction of its fingerprints that its `matches`-th best earlier query shares."""

    def __init__(self, *, step: float, window: int, stride: int, kept: int, matches: int, scope: Scope) -> None:
        super().__init__(scope=scope)
        self.step, self.window, self.stride, self.kept, self.matches = step, window, stride, kept, matches
        self._memo = DigestMemo(step, window)

    def features(self, x: np.ndarray) -> Fingerprints:
        return fingerprints(x, step=self.step, window=self.window, stride=self.stride, kept=self.kept, memo=self._memo)

    def new_history(self) -> HashIndex:
        return HashIndex(self.matches)

    def fresh(self) -> BlacklightDetector:
        clone = super().fresh()
        clone._memo = DigestMemo(self.step, self.window)  # the windows this copy has seen: none yet
        return clone


class Blacklight(DetectionDefense):
    def __init__(
        self,
        *,
        quantization_step: Annotated[float, Range(above=0, maximum=1)] = 0.25,
        window_size: PositiveInt = 20,
        stride: PositiveInt = 1,
        hashes_kept: PositiveInt = 50,
        match_fraction: Annotated[float, Range(above=0, maximum=1)] = 0.5,
        matches: PositiveInt = 3,
        **common,
    ) -> None:
        self.quantization_step = quantization_step
        self.window_size = window_size
        self.stride = stride
        self.hashes_kept = hashes_kept
        self.match_fraction = match_fraction
        self.matches = matches
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
            matches=self.matches,
            scope=self.scope,
        )

    def threshold(self, detector: BlacklightDetector, operator: OperatorKit) -> float:
        return self.match_fraction
