"""What the API answers when it will not answer."""

from __future__ import annotations

from typing import Hashable

import numpy as np


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


class QueryRejected(QueryRefused):
    """The operator's detector flagged a query: it was charged, not answered, and (`banned`) the account may have
    been banned for it."""

    def __init__(self, example: Hashable, account: int, answered: np.ndarray, *, banned: bool = True) -> None:
        outcome = f"account {account} banned" if banned else "query rejected"
        super().__init__(f"a query for example {example!r} was flagged by the detector: {outcome}", answered)
        self.example = example
        self.account = account
        self.banned = banned


class AccountBanned(QueryRefused):
    """The account is banned: its rows were refused, never charged; another account may ask them."""

    def __init__(self, account: int, answered: np.ndarray) -> None:
        super().__init__(f"account {account} is banned", answered)
        self.account = account


class AccountsExhausted(QueryRefused):
    """Every account the attacker holds has reached its limit."""
