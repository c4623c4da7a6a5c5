"""What answers the rows the Oracle admits: the operator's shield around the judge, in this process.

The Oracle does the accounting (which rows an example's budget and an account's quota admit, the ledger, the clock);
a responder turns admitted rows into answers. `ShieldResponder` evaluates them here: the model the shield deploys,
its output filter, and its stateful detector, which sees every admitted row in order. A row it flags is rejected
(never evaluated); with `on_detection="ban"` the first flagged row also bans its account, whose later rows are
refused unseen. `gavel serve` answers HTTP requests with the same responder, one account per API key, and
`target=remote` answers through HTTP (`targets.access.remote.RemoteResponder`): the Oracle cannot tell them apart.

A detector whose features are the model's own activations before its last layer (`Detector.shared_forward`: a
kNN over the judge's penultimate layer) gets them from the responder, which runs that part of the model once per
screened row and answers from them through the last layer: the model is still evaluated once per answered row.

Detector histories and bans are shared by every caller: a responder answers one call at a time (a lock), so
concurrent callers see the same order of rows as sequential ones would.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from gavel.targets.access.policy import Output
from gavel.targets.access.shield import Shield


@dataclass(frozen=True)
class Response:
    """A responder's answer to admitted rows, row by row."""

    values: np.ndarray
    """Answers of the answered rows (labels or rows of scores); zeros elsewhere."""
    answered: np.ndarray
    rejected: np.ndarray
    """Flagged by the detector: charged, never evaluated."""
    banned: np.ndarray
    """Refused because the account is (or just became) banned: neither charged nor evaluated."""
    refused: np.ndarray
    """Refused by the service's own quota or rate limit for the account (a remote judge's keys): not charged."""
    account_banned: bool
    scores: np.ndarray | None = None
    """The detector's score of each screened row (None without a detector or from a remote judge)."""
    withheld: np.ndarray | None = None
    """Evaluated and charged, the answer withheld (a remote service refusing a whole request for a detector's flag
    on a later row): charged and unanswered, as a rejected row is, but not itself flagged. None: no such row."""


class Responder(Protocol):
    """Turns rows the Oracle admitted into answers of the kind `output`, for `account`."""

    banned: set[int]
    """The accounts banned (refused unseen from now on)."""
    model: nn.Module | None
    """The model it evaluates, for open weights; None where it answers over an API."""

    def respond(self, x: np.ndarray, account: int, output: Output) -> Response: ...


class Evaluator(Protocol):
    """The operator's own look at the API's answers (not a query: never charged to the attacker)."""

    def verdicts(self, x: np.ndarray, output: Output) -> np.ndarray: ...

    def served_probabilities(self, x: np.ndarray) -> np.ndarray: ...


def served(judge: nn.Module) -> nn.Module:
    """The judge as it is served: a network with 2-d convolutions is put, in place, in channels-last memory
    format. Same function (logits agree to about 1e-6, the float rounding of another summation order), about twice
    the rows per second on a CPU for the digits CNN (bench/query_engine.py). A judge of the user's own chose its
    layout when it was loaded (`targets.judges.foreign`: only where its function stays the same) and is served as it
    is."""
    modules = list(judge.modules())
    if any(getattr(module, "layout_chosen", False) for module in modules):
        return judge
    if any(isinstance(module, nn.Conv2d) for module in modules):
        judge.to(memory_format=torch.channels_last)
    return judge


def blank(output: Output, n: int, n_classes: int) -> np.ndarray:
    """`n` blank answers of the API's kind: labels, or rows of scores."""
    if output == Output.LABEL:
        return np.zeros((n,), dtype=np.int64)
    return np.zeros((n, n_classes), dtype=np.float32)


class ShieldResponder:
    def __init__(self, shield: Shield, *, n_classes: int, batch_size: int = 256, device: str = "cpu") -> None:
        self.model = served(shield.model)
        self._output_filter = shield.output_filter
        self._detector = shield.detector
        self._shared = None if shield.detector is None else shield.detector.shared_forward(self.model)
        self.bans = shield.on_detection == "ban"
        self.banned: set[int] = set()
        self.n_classes = n_classes
        self.device = device
        self._batch_size = batch_size
        self._lock = threading.Lock()

    def respond(self, x: np.ndarray, account: int, output: Output) -> Response:
        n = len(x)
        none = np.zeros(n, dtype=bool)
        with self._lock:
            if account in self.banned:  # refused unseen: the account no longer exists for the operator
                return Response(blank(output, n, self.n_classes), none, none, ~none, none, True)
            rejected, banned, features, scores = self._screen(x, account)
            answered = ~rejected & ~banned
            values = blank(output, n, self.n_classes)
            if answered.any():  # from the screened rows' features, when the detector shares the forward pass
                values[answered] = self.answer(x[answered], output, None if features is None else features[answered])
            if rejected.any() and self.bans:
                self.banned.add(account)
            return Response(values, answered, rejected, banned, none, account in self.banned, scores)

    def unscreened(self, x: np.ndarray, output: Output) -> Response:
        """Every row answered, the detector not shown them: the operator's own evaluation (an auditor's key)."""
        n = len(x)
        none = np.zeros(n, dtype=bool)
        with self._lock:
            return Response(self.answer(x, output), ~none, none, none, none, False)

    def _screen(self, x: np.ndarray, account: int) -> tuple[np.ndarray, np.ndarray, Any, np.ndarray | None]:
        """The detector's look at the rows, in order, as masks: (rejected, refused by the ban). With bans, the first
        flagged row and the rows after it; otherwise every flagged row, and none refused. Third: the rows' features
        when the detector shares the model's forward pass (`Detector.shared_forward`), else None; fourth, the
        detector's scores."""
        rejected = np.zeros(len(x), dtype=bool)
        banned = np.zeros(len(x), dtype=bool)
        if self._detector is None or not len(x):
            return rejected, banned, None, None
        features = None if self._shared is None else self._shared.trunk(x)
        if not self.bans:
            flags, scores = self._detector.screen_every(x, account, features=features)
            rejected[flags] = True
            return rejected, banned, features, scores
        flagged, scores = self._detector.screen(x, account, features=features)
        if flagged is not None:
            rejected[flagged] = True
            banned[flagged + 1 :] = True
        return rejected, banned, features, scores

    def answer(self, x: np.ndarray, output: Output, features: Any = None) -> np.ndarray:
        """What the API returns for each row: its label, or its scores."""
        scores = self.scores(x, output, features)
        if output == Output.LABEL:
            return scores.argmax(axis=1).astype(np.int64)
        return scores

    @torch.no_grad()
    def logits(self, x: np.ndarray, features: Any = None) -> np.ndarray:
        """The model's logits of the rows of `x`; from their `features` through the model's head when the detector
        shares the forward pass and computed them."""
        if features is None:
            model, inputs = self.model, torch.from_numpy(x)
        else:
            model, inputs = self._shared.head, features
        logits = [
            model(inputs[i : i + self._batch_size].to(self.device)).float() for i in range(0, len(x), self._batch_size)
        ]
        return (torch.cat(logits) if logits else torch.zeros(0, self.n_classes)).cpu().numpy()

    def scores(self, x: np.ndarray, output: Output, features: Any = None) -> np.ndarray:
        """What the API returns for each row, before a labels-only API keeps just the arg-max: logits, or
        probabilities (through the output filter when there is one; a labels-only API without one takes the
        arg-max of the logits)."""
        out = torch.from_numpy(self.logits(x, features))
        if self._output_filter is None:
            if output == Output.PROBABILITIES:
                out = torch.softmax(out, dim=1)
            return out.numpy()
        return np.asarray(self._output_filter(torch.softmax(out, dim=1).numpy()), dtype=np.float32)

    def verdicts(self, x: np.ndarray, output: Output) -> np.ndarray:
        """The verdict the API returns for each row (its answer's arg-max): the operator's own evaluation, not a
        query: not screened."""
        return self.scores(x, output).argmax(axis=1).astype(np.int64)

    def served_probabilities(self, x: np.ndarray) -> np.ndarray:
        """The probabilities the API serves for each row (after the output filter)."""
        return self.scores(x, Output.PROBABILITIES)
