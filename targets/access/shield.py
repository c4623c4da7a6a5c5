"""What the operator puts in the Oracle beside the access policy: the contracts the Oracle calls, and the
`Shield` that carries one deployment of them. The defenses themselves live in `defenses/` (which imports this
module; nothing here imports a defense).

- an **output filter** changes every answer before it leaves (rounded or noisy probabilities, top-k, reverse
  sigmoid, labels only): probabilities in, probabilities-shaped rows out; the verdict is the arg-max of what
  is returned;
- a **detector** watches the queries (each account's history, or every account's) and flags a query that
  looks like part of an attack; on a flag the Oracle rejects that query and, as the shield's `on_detection`
  says, bans the account (`"ban"`) or only refuses the query and goes on listening (`"reject"`: the setting of
  Blacklight's and PIHA's papers and of the OARS attacks on them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from torch import nn


class OutputFilter(ABC):
    """Applied by the Oracle to every answer it returns, attack or honest user alike."""

    @abstractmethod
    def __call__(self, probabilities: np.ndarray) -> np.ndarray:
        """`probabilities` [rows, classes] (float32, rows sum to 1) -> what the API returns, same shape."""


@dataclass(frozen=True)
class SharedForward:
    """Where a detector's features are the served model's own intermediate activations (a kNN over the judge's
    penultimate layer): `model(x)` equals `head(trunk(x))` to float rounding, and `trunk(x)` (numpy rows in, a
    tensor of feature rows out) are the features the detector screens. The Oracle then runs the trunk once per
    screened row, for the detector and for the answer, and the head only on the rows it answers."""

    trunk: Callable[[np.ndarray], Any]
    head: nn.Module


class Detector(ABC):
    """A stateful detector over the queries the Oracle has admitted (within budget and quota).

    `scores` is causal: row i of a call is scored against the stored history and the call's rows before it
    (of the same account, or of every account when the detector's scope is global), as if the rows had
    arrived one by one. Higher scores are more suspicious; a row is flagged when its score reaches
    `threshold`. `screen` is what the Oracle calls.
    """

    threshold: float

    @abstractmethod
    def scores(self, x: np.ndarray, account: int) -> np.ndarray:
        """[rows] float64 suspicion scores of the rows of one call from `account`; stores nothing."""

    @abstractmethod
    def remember(self, x: np.ndarray, account: int) -> None:
        """Add rows (in order) to the history that later queries are scored against."""

    @abstractmethod
    def fresh(self) -> Detector:
        """The same detector (encoder, parameters, threshold) with an empty history."""

    def shared_forward(self, model: nn.Module) -> SharedForward | None:
        """How this detector's features come out of `model`'s forward pass, when they do (then the Oracle hands
        them to `screen` and `screen_every` as `features`); None, the default: the detector computes its own."""
        return None

    def screen(self, x: np.ndarray, account: int, *, features: Any = None) -> tuple[int | None, np.ndarray]:
        """Score the rows of one call in order; the first flagged row ends what this account is heard on.
        Returns (index of the first flagged row or None, the scores of the rows up to and including it); only
        those rows are stored. `features`: the rows' features from the Oracle's `shared_forward`, if any."""
        scores = self.scores(x, account)
        flagged = np.flatnonzero(scores >= self.threshold)
        first = int(flagged[0]) if len(flagged) else None
        seen = len(x) if first is None else first + 1
        self.remember(x[:seen], account)
        return first, scores[:seen]

    def screen_every(self, x: np.ndarray, account: int, *, features: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Score the rows of one call in order and store them all, flagged ones included (the operator saw
        them); returns (which rows are flagged, their scores). What the Oracle calls when a flag only rejects.
        `features` as in `screen`."""
        scores = self.scores(x, account)
        self.remember(x, account)
        return scores >= self.threshold, scores


ON_DETECTION = ("ban", "reject")
"""What the operator does when its detector flags a query: reject it and ban the account (its later queries are
refused), or reject only that query and keep answering the account."""


@dataclass(frozen=True)
class Shield:
    """One deployment of a defense: the model the Oracle evaluates (the judge, or the judge wrapped, e.g. with
    input noise), the filter on its answers, the detector on its queries (each may be absent), and what a
    detection costs the account (`on_detection`, one of `ON_DETECTION`)."""

    model: nn.Module
    output_filter: OutputFilter | None = None
    detector: Detector | None = None
    on_detection: str = "ban"

    def __post_init__(self) -> None:
        if self.on_detection not in ON_DETECTION:
            raise ValueError(f"defense.on_detection={self.on_detection!r}: allowed: {', '.join(ON_DETECTION)}")
