"""Stateful detection by similarity (Chen, Carlini & Wagner, 2019, "Stateful detection of black-box adversarial
attacks"): a query-based attack asks about many inputs close to each other, so a query whose k nearest stored
queries are unusually close is flagged.

A query's score is minus the mean L2 distance to its k nearest stored queries in an encoder's feature space
(`encoders.py`), so higher is more suspicious; before k queries are stored it uses the ones there are, and a first
query scores -inf. The threshold comes from the operator's own benign data: each benign example is scored against
the others (leave-one-out) and the threshold is the (1 - fpr) quantile, so about a fraction `fpr` of benign
queries would be flagged against a history as large and as varied as the operator's data.

The search is exact and has no loop over stored queries: one matrix product ranks every stored query (and the
call's own earlier rows: row i of a call also sees rows 0 .. i-1) for every row of the call, a two-stage selection
finds the k nearest (`k_smallest`), and their distances are measured again exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from gavel.defenses.base import OperatorKit
from gavel.defenses.detection.base import DetectionDefense, History, HistoryDetector, Scope, Scratch
from gavel.defenses.detection.encoders import (
    Encoder,
    EncoderName,
    Trunk,
    penultimate_encoder,
    pixels_encoder,
    similarity_encoder,
)
from gavel.targets.access.shield import SharedForward
from gavel.targets.params import PositiveInt, Probability

CALL_ROWS = 256
"""Rows of one call scored together: bounds the [rows, stored] matrix of ranking keys however large the call."""
STORED_COLUMNS = 65_536
"""Stored queries ranked at once: bounds the same matrix however long the history grows."""
BLOCK = 16
"""Stored queries per block in the two-stage selection (`k_smallest`): about sqrt(10,000 / k), which balances
ranking the blocks against searching the k chosen ones at the history sizes benchmarked."""
PROBE_ROWS = 64
"""The operator's examples on which a penultimate encoder is checked to compose with the judge's last layer."""
CALIBRATION_ROWS = 5_000
"""At most this many of the operator's benign examples set the threshold (leave-one-out is quadratic)."""


def with_norms(points: torch.Tensor) -> torch.Tensor:
    """[points, dim + 1]: each point with its squared norm appended, as `nearest` takes them."""
    return torch.cat([points, (points * points).sum(1, keepdim=True)], dim=1)


def ranking_keys(points: torch.Tensor, queries: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """[len(queries), len(points)]: |p|^2 - 2 p.q for `points` given `with_norms`, the squared distance less
    |q|^2, which orders each query's points as the distance does. One matrix product, the norm term included:
    fast, but rounded by the size of the norms, so it only chooses the neighbours (`nearest` measures them again
    exactly). A row per query: the searches that follow read each query's keys from contiguous memory."""
    return torch.mm(torch.cat([-2.0 * queries, queries.new_ones((len(queries), 1))], dim=1), points.T, out=out)


def smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The column indices [rows, k] of the k smallest entries of each row of `values` (k < columns), in no order."""
    if values.device.type == "cpu":  # numpy's introselect: about twice as fast as `topk` on a CPU
        return torch.from_numpy(np.argpartition(values.numpy(), k - 1, axis=1)[:, :k])
    return values.topk(k, dim=1, largest=False, sorted=False).indices


def k_smallest(keys: torch.Tensor, k: int) -> torch.Tensor:
    """The point indices [queries, min(k, points)] of the k smallest keys of each query, in no order, from `keys`
    [queries, points] (contiguous).

    Exact, in two stages when there are many points: each of a query's k smallest keys lies in a block whose
    minimum is among its k smallest block minima (a block holding one of them has a minimum no larger than it, and
    fewer than k keys are smaller), so only those k blocks are searched. Block b holds the points b, b + blocks,
    b + 2 blocks, ...: its minima over all queries are an elementwise minimum of `BLOCK` whole stretches of each
    row. Several times faster than one `topk` over 10,000 stored queries on a CPU."""
    queries, points = keys.shape
    if points <= k:
        return torch.arange(points, device=keys.device).expand(queries, -1)
    blocks = points // BLOCK
    if blocks <= 2 * k:
        return smallest(keys, k)
    minima = keys.as_strided((queries, BLOCK, blocks), (keys.stride(0), blocks, 1)).amin(1)
    chosen = smallest(minima, k)
    members = blocks * torch.arange(BLOCK, device=keys.device)
    candidates = (chosen[:, :, None] + members).reshape(queries, k * BLOCK)
    tail = torch.arange(blocks * BLOCK, points, device=keys.device).expand(queries, -1)  # past the last whole block
    candidates = torch.cat([candidates, tail], dim=1)
    return candidates.gather(1, smallest(keys.gather(1, candidates), k))


def nearest(
    queries: torch.Tensor,
    points: torch.Tensor,
    k: int,
    *,
    queries_at: int | None = None,
    causal: bool = False,
    scratch: Scratch | None = None,
) -> torch.Tensor:
    """[queries, min(k, points)] exact squared distances from each query to its k nearest points (no order), inf
    where fewer than k points are allowed. `points` come `with_norms`.

    When the queries are among the points (query i is point `queries_at + i`), a query is not its own neighbour,
    and with `causal` it does not see the queries after it either. `scratch`: memory for the keys and the
    neighbours' features, reused from call to call."""
    scratch = scratch or Scratch()
    best = queries.new_empty((len(queries), 0))
    for start in range(0, len(points), STORED_COLUMNS):
        chunk = points[start : start + STORED_COLUMNS]
        keys = ranking_keys(
            chunk, queries, out=scratch.take("keys", (len(queries), len(chunk)), queries.dtype, queries.device)
        )
        if queries_at is not None:
            _exclude_own(keys, start, queries_at, causal)
        index = k_smallest(keys, k)
        # Measured again from the differences: exact to float32 rounding whatever the norms or the batch, so a
        # call's scores equal the scores of its rows asked one by one, and a repeat is at distance 0. (Their
        # features alone gathered and the differences taken in place: the same numbers, less memory traffic.)
        dim = chunk.shape[1] - 1
        gathered = scratch.take("neighbours", (index.numel(), dim), queries.dtype, queries.device)
        neighbours = torch.index_select(chunk[:, :-1], 0, index.reshape(-1), out=gathered).view(*index.shape, dim)
        exact = neighbours.sub_(queries[:, None, :]).square_().sum(2)
        exact.masked_fill_(torch.isinf(keys.gather(1, index)), math.inf)
        best = torch.cat([best, exact], dim=1)
        if start:  # several chunks: keep the k nearest over all of them
            best = best.topk(min(k, best.shape[1]), dim=1, largest=False, sorted=False).values
    return best


def _exclude_own(keys: torch.Tensor, start: int, queries_at: int, causal: bool) -> None:
    """Set to inf the keys [queries, chunk points] of the pairs (query i, point queries_at + j) with j == i, or
    with j >= i when `causal`, for the points of the chunk that begins at point `start`."""
    queries, points = keys.shape
    first, last = max(queries_at, start), min(queries_at + queries, start + points)
    if first >= last:
        return
    own = torch.arange(first - queries_at, last - queries_at, device=keys.device)[None, :]
    query = torch.arange(queries, device=keys.device)[:, None]
    keys[:, first - start : last - start].masked_fill_(own >= query if causal else own == query, math.inf)


def mean_distance_scores(squared: torch.Tensor) -> np.ndarray:
    """Minus the mean distance over the finite entries of each row (inf marks no neighbour); -inf for none."""
    finite = torch.isfinite(squared)
    count = finite.sum(1)
    total = torch.where(finite, squared, 0.0).sqrt().sum(1)
    scores = (-total / count.clamp_min(1)).double()
    return torch.where(count > 0, scores, -math.inf).cpu().numpy()


class FeatureHistory(History):
    """Stored feature rows, `with_norms`, in a preallocated tensor that doubles when full: adding a call's rows is
    one copy."""

    def __init__(self, k: int, scratch: Scratch | None = None) -> None:
        self.k = k
        self.scratch = scratch or Scratch()
        self._rows: torch.Tensor | None = None
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, features: torch.Tensor) -> None:
        self._stage(features)
        self._count += len(features)

    def scores(self, features: torch.Tensor) -> np.ndarray:
        # The call's rows are staged right after the stored ones (not stored: the count stays), so that each block
        # of them is searched together with everything before it in one pass, seeing only its own earlier rows.
        self._stage(features)
        parts = [np.zeros(0)]
        for start in range(0, len(features), CALL_ROWS):
            rows = features[start : start + CALL_ROWS]
            before_and_block = self._rows[: self._count + start + len(rows)]
            squared = nearest(
                rows, before_and_block, self.k, queries_at=self._count + start, causal=True, scratch=self.scratch
            )
            parts.append(mean_distance_scores(squared))
        return np.concatenate(parts)

    def _stage(self, features: torch.Tensor) -> None:
        """Copy `features` (with their norms) after the stored rows, growing the buffer (doubling) if they do not
        fit."""
        features = with_norms(features)
        needed = self._count + len(features)
        if self._rows is None:
            self._rows = features.new_empty((max(64, 2 * needed), features.shape[1]))
        elif needed > len(self._rows):
            grown = self._rows.new_empty((max(2 * len(self._rows), needed), self._rows.shape[1]))
            grown[: self._count] = self._rows[: self._count]
            self._rows = grown
        self._rows[self._count : needed] = features


class KnnDetector(HistoryDetector):
    """Scores a query by minus the mean distance to its k nearest stored queries in `encoder`'s feature space.
    With `shares_forward` (the encoder is a `Trunk` of the judge that composes with its head), the Oracle serving
    that judge computes the features once, for the detector and for the answer."""

    def __init__(self, encoder: Encoder, *, k: int, scope: Scope, shares_forward: bool = False) -> None:
        super().__init__(scope=scope)
        self.encoder = encoder
        self.k = k
        self.shares_forward = shares_forward

    def shared_forward(self, model: nn.Module) -> SharedForward | None:
        if self.shares_forward and isinstance(self.encoder, Trunk) and model is self.encoder.judge:
            return SharedForward(self.encoder, self.encoder.head)
        return None

    def features(self, x: np.ndarray) -> torch.Tensor:
        return self.encoder(x)

    def new_history(self) -> FeatureHistory:
        return FeatureHistory(self.k, self.scratch)

    def leave_one_out_scores(self, x: np.ndarray) -> np.ndarray:
        """Each row of `x` scored against all the others, as if they were its stored history."""
        features = self.features(x)
        points = with_norms(features)
        scores = []
        for start in range(0, len(features), CALL_ROWS):
            rows = features[start : start + CALL_ROWS]
            scores.append(mean_distance_scores(nearest(rows, points, self.k, queries_at=start)))
        return np.concatenate(scores)


class KnnSimilarity(DetectionDefense):
    def __init__(
        self,
        *,
        k: PositiveInt = 50,
        fpr: Probability = 0.001,
        encoder: EncoderName = "similarity",
        embedding_dim: PositiveInt = 32,
        train_steps: PositiveInt = 200,
        **common,
    ) -> None:
        self.k = k
        self.fpr = fpr
        self.encoder = encoder
        self.embedding_dim = embedding_dim
        self.train_steps = train_steps
        super().__init__(**common)

    def check_judge(self, judge: nn.Module) -> None:
        if self.encoder == "penultimate" and not any(isinstance(m, nn.Linear) for m in judge.modules()):
            raise ValueError(
                "defense.encoder=penultimate: the judge has no torch Linear layer to stop before (a TorchScript, "
                "exported or ONNX Runtime model hides its layers); allowed: defense.encoder=similarity or pixels"
            )

    def detector(self, judge: nn.Module, operator: OperatorKit) -> KnnDetector:
        if self.encoder == "pixels":
            encoder = pixels_encoder(operator.device)
        elif self.encoder == "penultimate":
            encoder = penultimate_encoder(judge, operator.device)
            shares = encoder.composes(operator.benign_x[:PROBE_ROWS])
            return KnnDetector(encoder, k=self.k, scope=self.scope, shares_forward=shares)
        else:
            encoder = similarity_encoder(
                operator.benign_x,
                dim=self.embedding_dim,
                steps=self.train_steps,
                seed=operator.seed,
                device=operator.device,
                cache_dir=operator.cache_dir,
            )
        return KnnDetector(encoder, k=self.k, scope=self.scope)

    def threshold(self, detector: KnnDetector, operator: OperatorKit) -> float:
        benign = operator.benign_x
        if len(benign) < 2:
            raise ValueError("defense=knn_similarity: the operator needs at least 2 benign examples to set a threshold")
        if len(benign) > CALIBRATION_ROWS:
            rng = np.random.default_rng(operator.seed)
            benign = benign[np.sort(rng.choice(len(benign), CALIBRATION_ROWS, replace=False))]
        return float(np.quantile(detector.leave_one_out_scores(benign), 1.0 - self.fpr))
