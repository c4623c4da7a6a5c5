"""The Oracle: the operator's side of the API, and the only way a black-box attacker reaches a judge.

It answers what the access policy allows (logits, probabilities or a label) and counts one query per row
it evaluates. It enforces two separate limits and never evaluates a row past either:

- the per-example budget (`access.budget`, the literature's measure): queries charged to one attacked
  example; queries that serve the whole attack (labelling data for model extraction, key `SHARED`) come out
  of the same budget, spread evenly over the examples the attack plans for (`plan`);
- the operator's rate limit: `access.account_limit` queries per account per `access.window` hours.

Time is simulated: at `access.rate` queries per minute an account's queries are spaced 60/rate seconds
apart, one after another; the ledger records when each call started and ended. The Oracle speaks numpy
in and numpy out, so it can later sit behind an HTTP API unchanged.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Hashable

import numpy as np
import torch
from torch import nn

WEIGHTS = ("open", "hidden")
OUTPUTS = ("logits", "probabilities", "label")
SHARED = "shared"


class AccessDenied(PermissionError):
    """The access policy does not give the attacker what it asked for."""


class QueryRefused(Exception):
    """Some rows of a query were not evaluated. `answered` holds the answers to the rows that were."""

    def __init__(self, message: str, answered: np.ndarray) -> None:
        super().__init__(message)
        self.answered = answered


class BudgetExhausted(QueryRefused):
    """An example's query budget (or the attack's shared budget) ran out."""

    def __init__(self, example: Hashable, budget: int, answered: np.ndarray) -> None:
        super().__init__(f"query budget of {budget} per example exhausted for example {example!r}", answered)
        self.example = example
        self.budget = budget


class AccountLimitReached(QueryRefused):
    """An account reached the operator's per-account limit for the current window."""

    def __init__(self, account: int, limit: int, answered: np.ndarray) -> None:
        super().__init__(f"account {account} reached its limit of {limit} queries for this window", answered)
        self.account = account


def _positive_int_or_none(key: str, value, meaning: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{key}={value!r}: allowed: a positive integer ({meaning}) or null (unlimited)")


def _positive_number(key: str, value, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{key}={value!r}: allowed: {allowed}")


@dataclass(frozen=True)
class AccessPolicy:
    """What the operator lets an attacker see and how much: `conf/access`."""

    weights: str
    output: str
    budget: int | None
    account_limit: int | None = None
    window: float = 24.0
    rate: float | None = None
    accounts: int = 1
    account_cost: float = 0.0

    def __post_init__(self) -> None:
        if self.weights not in WEIGHTS:
            raise ValueError(f"access.weights={self.weights!r}: allowed: {', '.join(WEIGHTS)}")
        if self.output not in OUTPUTS:
            raise ValueError(f"access.output={self.output!r}: allowed: {', '.join(OUTPUTS)}")
        _positive_int_or_none("access.budget", self.budget, "queries per example")
        _positive_int_or_none("access.account_limit", self.account_limit, "queries per account per window")
        _positive_number("access.window", self.window, "a positive number of hours")
        if self.rate is not None:
            _positive_number("access.rate", self.rate, "a positive number of queries per minute, or null")
        if isinstance(self.accounts, bool) or not isinstance(self.accounts, int) or self.accounts < 1:
            raise ValueError(f"access.accounts={self.accounts!r}: allowed: a positive integer")
        cost = self.account_cost
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or cost < 0:
            raise ValueError(f"access.account_cost={self.account_cost!r}: allowed: a number >= 0")

    @classmethod
    def from_config(cls, cfg) -> "AccessPolicy":
        return cls(**{key: cfg[key] for key in cls.__dataclass_fields__ if key in cfg})


@dataclass(frozen=True)
class LedgerEntry:
    """One call: rows asked for, rows evaluated, by which account, and when (simulated seconds)."""

    example: Hashable
    account: int
    requested: int
    evaluated: int
    start: float
    end: float


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
        self._planned: int | None = None
        self._window_start: dict[int, float] = {}
        self._window_used: Counter = Counter()
        self.clock = 0.0
        self.ledger: list[LedgerEntry] = []

    def plan(self, n_examples: int) -> None:
        """Declare how many examples the attack will attack: they share the budget for `SHARED` queries."""
        self._planned = n_examples

    def query(self, x: np.ndarray, *, example: Hashable, account: int = 0) -> np.ndarray:
        """Answer for each row of `x`, charging `example` and `account` one query per row evaluated.

        Rows past the budget or the account's limit are never evaluated; the answers to the rows before them
        travel on the `BudgetExhausted` or `AccountLimitReached` raised instead.
        """
        x = self._check_inputs(x)
        if not 0 <= account < self.policy.accounts:
            raise ValueError(f"account {account} does not exist: the attacker holds {self.policy.accounts}")
        self._roll_window(account)
        by_budget = self._budget_left(example)
        by_account = self._account_left(account)
        n_evaluated = min(len(x), by_budget, by_account)
        answers = self._answer(x[:n_evaluated])
        self._charge(example, account, len(x), n_evaluated)
        if n_evaluated < len(x):
            if by_budget <= by_account:
                self._exhausted.add(example)
                raise BudgetExhausted(example, self.policy.budget, answers)
            raise AccountLimitReached(account, self.policy.account_limit, answers)
        return answers

    def queries(self, example: Hashable) -> int:
        return self._used[example]

    def exhausted(self, example: Hashable) -> bool:
        """Whether a query for `example` was refused because its budget had run out."""
        return example in self._exhausted

    @property
    def queries_total(self) -> int:
        return sum(self._used.values())

    def rows(self, example: Hashable) -> list[tuple[int, float, float]]:
        """(account, start, end) in simulated seconds for each row evaluated for `example`, in order."""
        out = []
        for entry in self.ledger:
            if entry.example == example and entry.evaluated:
                step = (entry.end - entry.start) / entry.evaluated
                out += [
                    (entry.account, entry.start + step * i, entry.start + step * (i + 1))
                    for i in range(entry.evaluated)
                ]
        return out

    @property
    def accounts_used(self) -> int:
        return len({entry.account for entry in self.ledger if entry.evaluated})

    def open_weights(self) -> nn.Module:
        """The judge itself, for white-box attacks: only when its weights are open."""
        if self.policy.weights != "open":
            raise AccessDenied(
                "access.weights=hidden: the judge's weights and gradients are not available; "
                "use a black-box attack (transfer, score-based or decision-based) or access.weights=open"
            )
        return self._judge

    def _budget_left(self, example: Hashable) -> int | float:
        budget = self.policy.budget
        if budget is None:
            return math.inf
        if example == SHARED:
            if self._planned is None:
                raise RuntimeError("shared queries under a per-example budget need Oracle.plan(n_examples) first")
            return max(0, budget * self._planned - self.queries_total)
        shared_share = math.ceil(self._used[SHARED] / self._planned) if self._planned else 0
        return max(0, budget - shared_share - self._used[example])

    def _account_left(self, account: int) -> int | float:
        limit = self.policy.account_limit
        return math.inf if limit is None else max(0, limit - self._window_used[account])

    def _roll_window(self, account: int) -> None:
        start = self._window_start.get(account)
        if start is None or self.clock - start >= self.policy.window * 3600:
            self._window_start[account] = self.clock
            self._window_used[account] = 0

    def _charge(self, example: Hashable, account: int, requested: int, evaluated: int) -> None:
        self._used[example] += evaluated
        self._window_used[account] += evaluated
        start = self.clock
        if self.policy.rate is not None:
            self.clock += evaluated * 60.0 / self.policy.rate
        if requested:
            self.ledger.append(LedgerEntry(example, account, requested, evaluated, start, self.clock))

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
