"""The Oracle: the operator's side of the API, and the only way a black-box attacker reaches a judge.

It answers what the access policy allows (logits, probabilities or a label) and counts one query per row
it evaluates. It enforces two separate limits and never evaluates a row past either:

- the per-example budget (`access.budget`): `AccessPolicy.allowance` says what an example, or the shared
  queries of model extraction (key `SHARED`), may still spend, given the examples the attack plans for (`plan`);
- the operator's rate limit: `access.account_limit` queries per account per `access.window` hours.

Time is simulated: at `access.rate` queries per minute an account's queries are spaced 60/rate seconds
apart, one after another; the ledger records when each call started and ended. The Oracle speaks numpy
in and numpy out, so it can later sit behind an HTTP API unchanged.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Hashable

import numpy as np
import torch
from torch import nn

from targets.access.errors import AccessDenied, AccountLimitReached, BudgetExhausted
from targets.access.policy import AccessPolicy, Output, Weights


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
        by_budget = self.allowance(example)
        by_account = self.policy.account_allowance(self._window_used[account])
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
        if self.policy.output == Output.LABEL:
            return out.argmax(dim=1).cpu().numpy().astype(np.int64)
        if self.policy.output == Output.PROBABILITIES:
            out = torch.softmax(out, dim=1)
        return out.cpu().numpy()
