"""The attacker's side of the API: its accounts, and what the operator's published rules let it know.

When the operator's per-account limit refuses a query, or the operator bans the account, the attacker moves to
its next account and asks for the rest; when every account is spent it gives up, on this example and every one
after it. How a Sybil attacker uses its accounts is `access.sybil`:

- `rotate`: one account at a time, the next only when the current one is refused (spent or banned);
- `spread`: each example's queries go round its live accounts, `access.queries_per_visit` rows per account per
  visit, so that no account's history holds more than a share of any one example's queries (against a detector
  that watches each account alone). The rows of one call that fall to different accounts are sent as one call
  per account.

The client is the only handle a black-box attack holds: it reaches the API through `query` and the read-only
facts below, and sees it only as a `QueryAPI` (`targets.access.protocol`): the Oracle in this process, or a judge
deployed elsewhere (`target=remote`).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Hashable, Sequence

import numpy as np
from torch import nn

from gavel.targets.access.errors import (
    AccountBanned,
    AccountLimitReached,
    AccountsExhausted,
    BudgetExhausted,
    QueryRejected,
)
from gavel.targets.access.oracle import Answers
from gavel.targets.access.policy import SHARED, AccessPolicy, Output
from gavel.targets.access.protocol import QueryAPI


class AttackerClient:
    def __init__(self, oracle: QueryAPI) -> None:
        self._oracle = oracle
        self.account = 0
        """The account asked with last (with `rotate`, the one in use; every earlier one is spent)."""
        self.planned: int | None = None
        self._stopped: set = set()
        self._spread = oracle.policy.sybil == "spread"
        self._spent: set[int] = set()  # spread: accounts refused for their quota or banned
        self._sent: Counter = Counter()  # spread: rows charged to each example so far (the visit they fall in)

    def plan(self, n_examples: int) -> None:
        """The attacker picks its examples before it starts; the operator's budget for shared queries
        (labelling) follows from how many."""
        self.planned = n_examples
        self._oracle.plan(n_examples)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._oracle.input_shape

    @property
    def n_classes(self) -> int:
        return self._oracle.n_classes

    @property
    def policy(self) -> AccessPolicy:
        return self._oracle.policy

    @property
    def device(self) -> str:
        """Where the operator serves the judge (the device open weights come on)."""
        return self._oracle.device

    @property
    def out_of_accounts(self) -> bool:
        if self._spread:
            return len(self._spent) >= self.policy.accounts
        return self.account >= self.policy.accounts

    def _live(self) -> list[int]:
        return [a for a in range(self.policy.accounts) if a not in self._spent]

    def _visit(self, example: Hashable, ahead: int, live: list[int]) -> int:
        """spread: the account that asks the row `ahead` rows after the rows charged to `example` so far."""
        return live[((self._sent[example] + ahead) // self.policy.queries_per_visit) % len(live)]

    def _retire(self, account: int) -> None:
        """spread: `account` is refused from now on (its quota for the window, or a ban)."""
        self._spent.add(account)

    def open_weights(self) -> nn.Module:
        """The judge itself, only when its weights are open (else `AccessDenied`)."""
        return self._oracle.open_weights()

    def queries(self, example: Hashable) -> int:
        """Queries the operator charged to `example` (its ledger, not the attacker's own count)."""
        return self._oracle.queries(example)

    @property
    def queries_total(self) -> int:
        return self._oracle.queries_total

    def budget_left(self, example: Hashable) -> int | None:
        """What `example` (or `SHARED`) may still spend under the operator's rule; None when unlimited."""
        left = self._oracle.allowance(example)
        return None if left == math.inf else int(left)

    def quota_left(self) -> int | None:
        """Queries the attacker's accounts can still ask, by their quotas alone; None without a limit."""
        policy = self.policy
        if policy.account_limit is None:
            return None
        return policy.account_limit * policy.accounts - self.queries_total

    def label_allowance(self, wanted: int, reserve: int) -> int:
        """How many shared queries (labels for model extraction) the attacker can buy without breaking the
        limits it knows, keeping `reserve` queries for the attack itself."""
        allowed = wanted
        for left in (self.budget_left(SHARED), self.quota_left()):
            if left is not None:
                allowed = min(allowed, left - reserve)
        return max(0, allowed)

    def stopped(self, example: Hashable) -> bool:
        """Whether a refused query (budget, or no account left) stopped the attack on `example`."""
        return example in self._stopped

    def query(self, x: np.ndarray, *, example: Hashable) -> np.ndarray:
        if self._spread:
            return self._query_spread(x, example)
        answered: list[np.ndarray] = []
        done = 0
        while True:
            if self.out_of_accounts:
                self._stopped.add(example)
                raise AccountsExhausted(
                    f"all {self.policy.accounts} accounts have reached their limit", self._join(answered)
                )
            try:
                answered.append(self._oracle.query(x[done:], example=example, account=self.account))
                return self._join(answered)
            except (AccountLimitReached, AccountBanned) as refused:
                answered.append(refused.answered)
                done += len(refused.answered)
                self.account += 1
            except QueryRejected as refused:  # a library attack cannot read a rejection: it ends on this example
                if refused.banned:
                    self.account += 1
                self._stopped.add(example)
                raise QueryRejected(
                    example, refused.account, self._join([*answered, refused.answered]), banned=refused.banned
                ) from None
            except BudgetExhausted as refused:
                self._stopped.add(example)
                raise BudgetExhausted(example, refused.budget, self._join([*answered, refused.answered])) from None

    def _query_spread(self, x: np.ndarray, example: Hashable) -> np.ndarray:
        """`query` with each visit's rows asked by its own account, in order."""
        answered: list[np.ndarray] = []
        done = 0
        while done < len(x):
            live = self._live()
            if not live:
                self._stopped.add(example)
                raise AccountsExhausted(
                    f"all {self.policy.accounts} accounts have reached their limit or been banned", self._join(answered)
                )
            account = self._visit(example, 0, live)
            visit = self.policy.queries_per_visit - self._sent[example] % self.policy.queries_per_visit
            chunk = x[done : done + visit]
            self.account = account
            try:
                got = self._oracle.query(chunk, example=example, account=account)
            except (AccountLimitReached, AccountBanned) as refused:
                got = refused.answered
                self._retire(account)
            except QueryRejected as refused:  # a library attack cannot read a rejection: it ends on this example
                if refused.banned:
                    self._retire(account)
                self._sent[example] += len(refused.answered) + 1
                self._stopped.add(example)
                raise QueryRejected(
                    example, account, self._join([*answered, refused.answered]), banned=refused.banned
                ) from None
            except BudgetExhausted as refused:
                self._sent[example] += len(refused.answered)
                self._stopped.add(example)
                raise BudgetExhausted(example, refused.budget, self._join([*answered, refused.answered])) from None
            answered.append(got)
            done += len(got)
            self._sent[example] += len(got)
        return self._join(answered)

    def query_rows(self, x: np.ndarray, examples: Sequence[Hashable]) -> Answers:
        """Ask about many examples' rows at once, row i charged to `examples[i]`. Rows the current account's
        limit refuses, or refuses because the operator banned it, are asked again with the next account; an
        example with a row refused by its budget, or with rows left when every account is spent, is stopped. A
        row the detector rejected comes back rejected (charged, unanswered): what to do next is the attack's
        call."""
        if self._spread:
            return self._query_rows_spread(x, list(examples))
        examples = list(examples)
        values = self._zeros(len(x))
        answered = np.zeros(len(x), dtype=bool)
        over_budget = np.zeros(len(x), dtype=bool)
        rejected = np.zeros(len(x), dtype=bool)
        banned = np.zeros(len(x), dtype=bool)
        pending = np.arange(len(x))
        while len(pending):
            if self.out_of_accounts:
                self._stopped.update(examples[i] for i in pending)
                banned[pending] = False  # what was last refused is now refused for want of accounts
                break
            reply = self._oracle.query_rows(x[pending], [examples[i] for i in pending], account=self.account)
            values[pending[reply.answered]] = reply.values[reply.answered]
            answered[pending[reply.answered]] = True
            over_budget[pending[reply.over_budget]] = True
            rejected[pending[reply.rejected]] = True
            banned[pending[reply.banned]] = True
            self._stopped.update(examples[i] for i in pending[reply.over_budget])
            retry = reply.refused_by_account | reply.banned
            pending = pending[retry]
            if len(pending) or reply.account_banned:
                self.account += 1  # this account's quota is spent, or the operator banned it
            banned[pending] = False  # asked again: the final reply says what became of it
        return Answers(values, answered, over_budget, rejected=rejected, banned=banned)

    def _query_rows_spread(self, x: np.ndarray, examples: list[Hashable]) -> Answers:
        """`query_rows` with each row asked by the account whose visit it falls in: one call per account, and
        rows refused for an account's quota or ban asked again on the accounts still live."""
        values = self._zeros(len(x))
        answered = np.zeros(len(x), dtype=bool)
        over_budget = np.zeros(len(x), dtype=bool)
        rejected = np.zeros(len(x), dtype=bool)
        pending = np.arange(len(x))
        while len(pending):
            live = self._live()
            if not live:
                self._stopped.update(examples[i] for i in pending)
                break
            ahead: Counter = Counter()
            accounts = np.empty(len(pending), dtype=np.int64)
            for k, i in enumerate(pending):
                accounts[k] = self._visit(examples[i], ahead[examples[i]], live)
                ahead[examples[i]] += 1
            retry = []
            for account in dict.fromkeys(accounts.tolist()):
                rows = pending[accounts == account]
                self.account = account
                reply = self._oracle.query_rows(x[rows], [examples[i] for i in rows], account=account)
                values[rows[reply.answered]] = reply.values[reply.answered]
                answered[rows[reply.answered]] = True
                over_budget[rows[reply.over_budget]] = True
                rejected[rows[reply.rejected]] = True
                self._stopped.update(examples[i] for i in rows[reply.over_budget])
                for i in rows[reply.answered | reply.rejected]:
                    self._sent[examples[i]] += 1
                if reply.refused_by_account.any() or reply.account_banned:
                    self._retire(account)
                retry.append(rows[reply.refused_by_account | reply.banned])
            pending = np.sort(np.concatenate(retry))
        return Answers(values, answered, over_budget, rejected=rejected)

    def stop(self, example: Hashable) -> None:
        """Record that the attack on `example` ended without a query: no account was left to ask with."""
        self._stopped.add(example)

    def _join(self, parts: list[np.ndarray]) -> np.ndarray:
        parts = [p for p in parts if len(p)]
        return np.concatenate(parts) if parts else self._zeros(0)

    def _zeros(self, n: int) -> np.ndarray:
        """`n` blank answers of the API's kind: labels, or rows of scores."""
        if self.policy.output == Output.LABEL:
            return np.zeros((n,), dtype=np.int64)
        return np.zeros((n, self.n_classes), dtype=np.float32)
