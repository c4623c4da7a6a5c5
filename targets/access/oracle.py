"""The Oracle: the operator's side of the API, and the only way a black-box attacker reaches a judge.

It answers what the access policy allows (logits, probabilities or a label) and counts one query per row
it evaluates. A call may hold rows of many examples (`query_rows`): each row carries the example it is
charged to, so a batch is still charged exactly per example. It enforces two separate limits and never
evaluates a row past either:

- the per-example budget (`access.budget`): `AccessPolicy.allowance` says what an example, or the shared
  queries of model extraction (key `SHARED`), may still spend, given the examples the attack plans for (`plan`);
- the operator's rate limit: `access.account_limit` queries per account per `access.window` hours.

It accepts only the example keys the attack planned (`plan`), and only finite inputs in [0, 1] of the judge's
shape. Time is simulated: at `access.rate` queries per minute an account's queries are spaced 60/rate seconds
apart, one after another; the ledger records when each call started and ended. The Oracle speaks numpy
in and numpy out, so it can later sit behind an HTTP API unchanged.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np
import torch
from torch import nn

from targets.access.errors import AccessDenied, AccountLimitReached, BudgetExhausted
from targets.access.policy import SHARED, AccessPolicy, Output, Weights


@dataclass(frozen=True)
class Answers:
    """The Oracle's reply to a call, row by row."""

    values: np.ndarray
    """One answer per row (labels, or rows of scores); rows that were not evaluated hold zeros."""
    answered: np.ndarray
    """Which rows were evaluated (and charged)."""
    over_budget: np.ndarray
    """Which rows were refused because their example's budget was spent. A row neither answered nor over
    budget was refused by the account's limit: another account may ask it."""

    @property
    def refused_by_account(self) -> np.ndarray:
        return ~self.answered & ~self.over_budget


@dataclass(frozen=True)
class LedgerEntry:
    """One call: rows asked for, rows evaluated, by which account, and when (simulated seconds)."""

    example: Hashable
    account: int
    requested: int
    evaluated: int
    start: float
    end: float


def _served(judge: nn.Module) -> nn.Module:
    """The judge as the Oracle serves it: a network with 2-d convolutions is put, in place, in channels-last
    memory format. Same function (logits agree to about 1e-6, the float rounding of another summation order),
    about twice the rows per second on a CPU for the digits CNN (bench/query_engine.py)."""
    if any(isinstance(module, nn.Conv2d) for module in judge.modules()):
        judge.to(memory_format=torch.channels_last)
    return judge


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
        self._judge = _served(judge)
        self.policy = policy
        self.input_shape = tuple(input_shape)
        self.n_classes = n_classes
        self._batch_size = batch_size
        self._device = device
        self._used: Counter = Counter()
        self._exhausted: set = set()
        self._planned: int | None = None
        self._keys: frozenset = frozenset()
        self._window_start: dict[int, float] = {}
        self._window_used: Counter = Counter()
        self.clock = 0.0
        self.ledger: list[LedgerEntry] = []
        self._ledger_of: dict[Hashable, list[LedgerEntry]] = {}  # the same entries, by example

    def plan(self, n_examples: int) -> None:
        """Declare how many examples the attack will attack: their keys are 0 .. n_examples - 1 (and `SHARED`
        for labelling), and they share the budget for `SHARED` queries. No other key is answered."""
        if self._planned is not None:
            raise RuntimeError("the attack's examples are planned once")
        self._planned = n_examples
        self._keys = frozenset(range(n_examples)) | {SHARED}

    def query(self, x: np.ndarray, *, example: Hashable, account: int = 0) -> np.ndarray:
        """Answer for each row of `x`, all charged to `example` and `account`.

        Rows past the budget or the account's limit are never evaluated; the answers to the rows before them
        travel on the `BudgetExhausted` or `AccountLimitReached` raised instead (the account's limit when
        another account could still ask some of them).
        """
        answers = self.query_rows(x, [example] * len(x), account=account)
        evaluated = answers.values[answers.answered]
        if answers.refused_by_account.any():
            raise AccountLimitReached(account, self.policy.account_limit, evaluated)
        if answers.over_budget.any():
            raise BudgetExhausted(example, self.policy.budget, evaluated)
        return evaluated

    def query_rows(self, x: np.ndarray, examples: Sequence[Hashable], *, account: int = 0) -> Answers:
        """Answer the rows of `x`, row i charged to `examples[i]` and to `account`.

        Each example's rows are answered in order up to its allowance; of those, the account answers up to
        its quota for the window, in row order. No other row is evaluated. Shared queries (`SHARED`) travel
        alone: their allowance depends on every example's.
        """
        x = self._check_inputs(x)
        examples = list(examples)
        if len(examples) != len(x):
            raise ValueError(f"{len(x)} rows but {len(examples)} example keys: each row is charged to one example")
        if not 0 <= account < self.policy.accounts:
            raise ValueError(f"account {account} does not exist: the attacker holds {self.policy.accounts}")
        order = list(dict.fromkeys(examples))
        for example in order:
            if example not in self._keys:
                raise ValueError(f"example key {example!r} was not planned: the Oracle answers only planned examples")
        if SHARED in order and len(order) > 1:
            raise ValueError("shared queries travel alone: their allowance depends on every example's")
        self._roll_window(account)
        # Each row's rank among its own example's rows, in row order, against that example's allowance.
        index = {example: k for k, example in enumerate(order)}
        codes = np.fromiter((index[example] for example in examples), dtype=np.int64, count=len(examples))
        allowance = np.array([min(self.allowance(example), len(x)) for example in order], dtype=np.int64)
        asked = np.bincount(codes, minlength=len(order))
        first = np.cumsum(asked) - asked
        rank = np.empty(len(x), dtype=np.int64)
        rank[np.argsort(codes, kind="stable")] = np.arange(len(x)) - np.repeat(first, asked)
        within_budget = rank < allowance[codes]
        quota = self.policy.account_allowance(self._window_used[account])
        answered = within_budget & (np.cumsum(within_budget) <= quota)
        label = self.policy.output == Output.LABEL
        values = np.zeros((len(x),) if label else (len(x), self.n_classes), dtype=np.int64 if label else np.float32)
        if answered.any():
            values[answered] = self._answer(x[answered])
        evaluated = np.bincount(codes[answered], minlength=len(order))
        over = np.bincount(codes[~within_budget], minlength=len(order))
        unasked = np.bincount(codes[within_budget & ~answered], minlength=len(order))
        for k, example in enumerate(order):
            self._charge(example, account, int(asked[k]), int(evaluated[k]))
            if over[k] and not unasked[k]:
                self._exhausted.add(example)  # its budget is spent, not merely the account's quota
        return Answers(values, answered, ~within_budget)

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
        for entry in self._ledger_of.get(example, ()):
            if entry.evaluated:
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
        if self.policy.weights != Weights.OPEN:
            raise AccessDenied(
                "access.weights=hidden: the judge's weights and gradients are not available; "
                "use a black-box attack (transfer, score-based or decision-based) or access.weights=open"
            )
        return self._judge

    def allowance(self, example: Hashable) -> int | float:
        """What `example` may still be charged under the budget (`math.inf` when unlimited): the operator's
        published rule, which the attacker can read too."""
        return self.policy.allowance(example, self._used, self._planned)

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
            entry = LedgerEntry(example, account, requested, evaluated, start, self.clock)
            self.ledger.append(entry)
            self._ledger_of.setdefault(example, []).append(entry)

    def _check_inputs(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"query shape {x.shape[1:]} does not match the judge's input shape {self.input_shape}")
        if x.size and not np.isfinite(x).all():
            raise ValueError("query inputs must be finite: NaN or infinite values are refused")
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
        if self.policy.output == Output.LABEL:
            return out.argmax(dim=1).cpu().numpy().astype(np.int64)
        if self.policy.output == Output.PROBABILITIES:
            out = torch.softmax(out, dim=1)
        return out.cpu().numpy()
