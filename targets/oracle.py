"""The Oracle: the only handle a black-box attacker gets on a judge.

It answers what the access policy allows (logits, probabilities or a label), counts one query per example
row it evaluates, refuses to evaluate any row past an example's budget, and keeps a ledger of every call.
It speaks numpy in and numpy out, so it can later sit behind an HTTP API unchanged.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Hashable

import numpy as np
import torch
from torch import nn

WEIGHTS = ("open", "hidden")
OUTPUTS = ("logits", "probabilities", "label")


class AccessDenied(PermissionError):
    """The access policy does not give the attacker what it asked for."""


class BudgetExhausted(Exception):
    """An example's query budget ran out. `answered` holds the answers to the rows evaluated before it did."""

    def __init__(self, example: Hashable, budget: int, answered: np.ndarray) -> None:
        super().__init__(f"query budget of {budget} per example exhausted for example {example!r}")
        self.example = example
        self.budget = budget
        self.answered = answered


@dataclass(frozen=True)
class AccessPolicy:
    """What the operator lets an attacker see: `conf/access`."""

    weights: str
    output: str
    budget: int | None

    def __post_init__(self) -> None:
        if self.weights not in WEIGHTS:
            raise ValueError(f"access.weights={self.weights!r}: allowed: {', '.join(WEIGHTS)}")
        if self.output not in OUTPUTS:
            raise ValueError(f"access.output={self.output!r}: allowed: {', '.join(OUTPUTS)}")
        if self.budget is not None and (
            isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1
        ):
            raise ValueError(
                f"access.budget={self.budget!r}: allowed: a positive integer (queries per example) or null (unlimited)"
            )

    @classmethod
    def from_config(cls, cfg) -> "AccessPolicy":
        return cls(weights=cfg.weights, output=cfg.output, budget=cfg.budget)


@dataclass(frozen=True)
class LedgerEntry:
    """One call: rows asked for, rows evaluated (the rest were refused by the budget)."""

    example: Hashable
    requested: int
    evaluated: int


class Oracle:
    def __init__(
        self,
        judge: nn.Module,
        policy: AccessPolicy,
        *,
        input_shape: tuple[int, ...],
        n_classes: int,
        batch_size: int = 256,
        device: str = "cpu",
    ) -> None:
        self._judge = judge
        self.policy = policy
        self.input_shape = tuple(input_shape)
        self.n_classes = n_classes
        self._batch_size = batch_size
        self._device = device
        self._used: Counter = Counter()
        self._exhausted: set = set()
        self.ledger: list[LedgerEntry] = []

    def query(self, x: np.ndarray, *, example: Hashable) -> np.ndarray:
        """Answer for each row of `x`, charging `example` one query per row evaluated.

        Rows past the example's budget are never evaluated: the answers to the rows within it travel on the
        `BudgetExhausted` raised instead.
        """
        x = self._check_inputs(x)
        allowed = len(x) if self.policy.budget is None else max(0, self.policy.budget - self._used[example])
        n_evaluated = min(len(x), allowed)
        answers = self._answer(x[:n_evaluated])
        self._used[example] += n_evaluated
        if len(x):
            self.ledger.append(LedgerEntry(example, len(x), n_evaluated))
        if n_evaluated < len(x):
            self._exhausted.add(example)
            raise BudgetExhausted(example, self.policy.budget, answers)
        return answers

    def queries(self, example: Hashable) -> int:
        return self._used[example]

    def exhausted(self, example: Hashable) -> bool:
        """Whether a query for `example` was refused because its budget had run out."""
        return example in self._exhausted

    @property
    def queries_total(self) -> int:
        return sum(self._used.values())

    def open_weights(self) -> nn.Module:
        """The judge itself, for white-box attacks: only when its weights are open."""
        if self.policy.weights != "open":
            raise AccessDenied(
                "access.weights=hidden: the judge's weights and gradients are not available; "
                "use a black-box attack (transfer, score-based or decision-based) or access.weights=open"
            )
        return self._judge

    def _check_inputs(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"query shape {x.shape[1:]} does not match the judge's input shape {self.input_shape}")
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise ValueError("query inputs must lie in [0, 1]")
        return x

    @torch.no_grad()
    def _answer(self, x: np.ndarray) -> np.ndarray:
        logits = [
            self._judge(torch.from_numpy(x[i : i + self._batch_size]).to(self._device)).float()
            for i in range(0, len(x), self._batch_size)
        ]
        out = torch.cat(logits) if logits else torch.zeros(0, self.n_classes)
        if self.policy.output == "label":
            return out.argmax(dim=1).cpu().numpy().astype(np.int64)
        if self.policy.output == "probabilities":
            out = torch.softmax(out, dim=1)
        return out.cpu().numpy()
