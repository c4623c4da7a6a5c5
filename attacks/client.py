"""The attacker's side of the API: its handle on the Oracle and its accounts.

When the operator's per-account limit refuses a query, the attacker moves to its next account and asks for
the rest; when every account is spent it gives up, on this example and every one after it.
"""
from __future__ import annotations

import math
from typing import Hashable

import numpy as np

from targets.oracle import SHARED, AccountLimitReached, BudgetExhausted, Oracle, QueryRefused


class AccountsExhausted(QueryRefused):
    """Every account the attacker holds has reached its limit."""


class AttackerClient:
    def __init__(self, oracle: Oracle) -> None:
        self.oracle = oracle
        self.account = 0
        self.planned: int | None = None
        self._stopped: set = set()

    def plan(self, n_examples: int) -> None:
        """The attacker picks its examples before it starts; the operator's budget for shared queries
        (labelling) follows from how many."""
        self.planned = n_examples
        self.oracle.plan(n_examples)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.oracle.input_shape

    @property
    def n_classes(self) -> int:
        return self.oracle.n_classes

    @property
    def policy(self):
        return self.oracle.policy

    @property
    def out_of_accounts(self) -> bool:
        return self.account >= self.oracle.policy.accounts

    def open_weights(self):
        return self.oracle.open_weights()

    def queries(self, example: Hashable) -> int:
        """Queries the operator charged to `example` (its ledger, not the attacker's own count)."""
        return self.oracle.queries(example)

    def budget_left(self, example: Hashable) -> int | None:
        """What `example` may still spend: its budget less its queries and its share of the shared ones
        (the attacker knows the operator's rule); None when the budget is unlimited."""
        budget = self.oracle.policy.budget
        if budget is None:
            return None
        shared = self.oracle.queries(SHARED)
        share = math.ceil(shared / self.planned) if self.planned else 0
        return max(0, budget - share - self.oracle.queries(example))

    def stopped(self, example: Hashable) -> bool:
        """Whether a refused query (budget, or no account left) stopped the attack on `example`."""
        return example in self._stopped

    def query(self, x: np.ndarray, *, example: Hashable) -> np.ndarray:
        answered: list[np.ndarray] = []
        done = 0
        while True:
            if self.out_of_accounts:
                self._stopped.add(example)
                raise AccountsExhausted(
                    f"all {self.oracle.policy.accounts} accounts have reached their limit", self._join(answered)
                )
            try:
                answered.append(self.oracle.query(x[done:], example=example, account=self.account))
                return self._join(answered)
            except AccountLimitReached as refused:
                answered.append(refused.answered)
                done += len(refused.answered)
                self.account += 1
            except BudgetExhausted as refused:
                self._stopped.add(example)
                raise BudgetExhausted(example, refused.budget, self._join([*answered, refused.answered])) from None

    def stop(self, example: Hashable) -> None:
        """Record that the attack on `example` ended without a query: no account was left to ask with."""
        self._stopped.add(example)

    def _join(self, parts: list[np.ndarray]) -> np.ndarray:
        parts = [p for p in parts if len(p)]
        if parts:
            return np.concatenate(parts)
        shape = (0,) if self.oracle.policy.output == "label" else (0, self.oracle.n_classes)
        return np.zeros(shape, dtype=np.int64 if self.oracle.policy.output == "label" else np.float32)
