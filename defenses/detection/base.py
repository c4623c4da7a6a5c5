"""What the stateful detectors share: a history of admitted queries kept per account or across all accounts, and
the `DetectionDefense` contract that deploys a detector with its threshold into a `Shield`.

A detector turns each query into features (an embedding, a set of hashes, a bit string), stores the features of
the queries the Oracle admits, and scores a new query by how close it comes to what is stored. Subclasses say how
a query becomes features (`HistoryDetector.features`) and how features are stored and compared (`History`).
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from gavel.defenses.base import Defense, OperatorKit
from gavel.targets.access import THREAT_MODELS, AccessPolicy, ThreatModel
from gavel.targets.access.shield import Detector, Shield

Scope = Literal["account", "global"]
SCOPES = ("account", "global")
OnDetection = Literal["ban", "reject"]
"""What a flag costs the account: a ban (its later queries refused), or the flagged query alone (see Shield)."""

EVERYONE = -1
"""The key of the one history a global-scope detector keeps (account numbers start at 0)."""


class Scratch:
    """Memory a detector reuses from call to call for the large temporaries of its search (a [rows, stored] matrix
    of ranking keys or agreements): a fresh block of megabytes is handed back to the system when freed and faults
    its pages in again on the next call, which costs about as much as the matrix product that fills it. One per
    detector, shared by its histories: a call uses it only while it runs."""

    def __init__(self) -> None:
        self._memory: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A contiguous tensor of `shape` over the memory kept under `name` (its contents are whatever was left
        there), grown to twice the size when it is too small."""
        size = math.prod(shape)
        memory = self._memory.get(name)
        if memory is None or memory.dtype != dtype or memory.device != device:
            memory = self._memory[name] = torch.empty(size, dtype=dtype, device=device)
        elif len(memory) < size:
            memory = self._memory[name] = torch.empty(max(size, 2 * len(memory)), dtype=dtype, device=device)
        return memory[:size].view(shape)


class History(ABC):
    """The features of the stored queries that later queries (of one account, or of all) are scored against."""

    @abstractmethod
    def scores(self, features: Any) -> np.ndarray:
        """[rows] float64 causal scores: row i against the stored queries and rows 0 .. i-1 of the same call; -inf
        where there is nothing to compare with. Stores nothing."""

    @abstractmethod
    def add(self, features: Any) -> None:
        """Store the rows of `features`, in order."""

    @abstractmethod
    def __len__(self) -> int:
        """The number of queries stored."""


class HistoryDetector(Detector):
    """A detector that remembers the queries of each account (`scope="account"`) or of all accounts together
    (`"global"`: it also catches an attacker who spreads its queries over many accounts, at the price of comparing
    each honest user's queries with everyone's). `threshold` stays +inf (nothing flagged) until the defense sets
    it."""

    def __init__(self, *, scope: Scope, threshold: float = math.inf) -> None:
        if scope not in SCOPES:
            raise ValueError(f"defense.scope={scope!r}: allowed: {', '.join(SCOPES)}")
        self.scope = scope
        self.threshold = threshold
        self.scratch = Scratch()
        self._histories: dict[int, History] = {}

    @abstractmethod
    def features(self, x: np.ndarray) -> Any:
        """The features of the rows of `x` (float32, NCHW in [0, 1]), indexable by row slices."""

    @abstractmethod
    def new_history(self) -> History:
        """An empty history for these features."""

    def scores(self, x: np.ndarray, account: int) -> np.ndarray:
        return self._scored_against(account).scores(self.features(x))

    def remember(self, x: np.ndarray, account: int) -> None:
        self._kept_by(account).add(self.features(x))

    def screen(self, x: np.ndarray, account: int, *, features: Any = None) -> tuple[int | None, np.ndarray]:
        # `Detector.screen`'s contract, with each row's features computed once rather than once to score it and
        # again to store it: an encoder's forward pass can cost as much as the judge's.
        features = self.features(x) if features is None else features
        scores = self._scored_against(account).scores(features)
        flagged = np.flatnonzero(scores >= self.threshold)
        first = int(flagged[0]) if len(flagged) else None
        seen = len(scores) if first is None else first + 1
        self._kept_by(account).add(features[:seen])
        return first, scores[:seen]

    def screen_every(self, x: np.ndarray, account: int, *, features: Any = None) -> tuple[np.ndarray, np.ndarray]:
        features = self.features(x) if features is None else features  # once, as in `screen`
        scores = self._scored_against(account).scores(features)
        self._kept_by(account).add(features)
        return scores >= self.threshold, scores

    def fresh(self) -> HistoryDetector:
        # A shallow copy shares the encoder and the parameters, which nothing changes after deployment.
        clone = copy.copy(self)
        clone.scratch = Scratch()
        clone._histories = {}
        return clone

    def stored(self, account: int) -> int:
        """The number of queries that `account`'s next query is scored against."""
        history = self._histories.get(self._key(account))
        return 0 if history is None else len(history)

    def _key(self, account: int) -> int:
        return account if self.scope == "account" else EVERYONE

    def _scored_against(self, account: int) -> History:
        history = self._histories.get(self._key(account))
        return self.new_history() if history is None else history  # scoring must not create a history

    def _kept_by(self, account: int) -> History:
        key = self._key(account)
        if key not in self._histories:
            self._histories[key] = self.new_history()
        return self._histories[key]


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


class DetectionDefense(Defense):
    """A stateful detector in the Oracle: the judge is served unchanged, and a flagged query is rejected and,
    with `on_detection="ban"`, its account banned. Subclasses build the detector (`detector`) and set its
    threshold (`threshold`), from their hyperparameters or from the operator's own benign data."""

    kind = "detection"
    needs_operator_data = True

    def __init__(self, *, scope: Scope = "account", on_detection: OnDetection = "ban") -> None:
        # Subclasses store their hyperparameters under their own names before calling this.
        self.scope = scope
        self.on_detection = on_detection
        self.check_hyperparameters()

    def check(self, policy: AccessPolicy, threat_model: ThreatModel, name: str) -> None:
        super().check(policy, threat_model, name)
        if not threat_model.charged_queries:
            # A white-box or transfer attacker searches offline: the detector would see only finished inputs, one
            # per example, and the benchmark would credit it with stopping an attack it never observed.
            allowed = _either([model.name.replace("_", "-") for model in THREAT_MODELS if model.charged_queries])
            raise ValueError(
                f"defense={name} watches queries, but attack threat model {threat_model.name} sends none; "
                f"allowed: {allowed} attacks"
            )

    def deploy(self, judge: nn.Module, operator: OperatorKit) -> Shield:
        detector = self.detector(judge, operator)
        detector.threshold = self.threshold(detector, operator)
        return Shield(judge, detector=detector, on_detection=self.on_detection)

    @abstractmethod
    def detector(self, judge: nn.Module, operator: OperatorKit) -> HistoryDetector:
        """The detector, with an empty history and no threshold yet."""

    @abstractmethod
    def threshold(self, detector: HistoryDetector, operator: OperatorKit) -> float:
        """The score at which `detector` flags a query."""
