"""The Oracle: the operator's side of the API, and the only way a black-box attacker reaches a judge.

It answers what the access policy allows (logits, probabilities or a label) and counts one query per row
it evaluates. A call may hold rows of many examples (`query_rows`): each row carries the example it is
charged to, so a batch is still charged exactly per example. It enforces two separate limits and never
evaluates a row past either:

- the per-example budget (`access.budget`): `AccessPolicy.allowance` says what an example, or the shared
  queries of model extraction (key `SHARED`), may still spend, given the examples the attack plans for (`plan`);
- the operator's rate limit: `access.account_limit` queries per account per `access.window` hours.

It accepts only the example keys the attack planned (`plan`), and only finite inputs in [0, 1] of the judge's
shape.

Rows within the limits go to a responder (`targets.access.responder`): in this process, the operator's shield
(`targets.access.shield.Shield`: the model it evaluates, a filter on every answer, and a stateful detector); for a
judge deployed elsewhere, its HTTP API (`targets.access.remote`). A row the detector flags is rejected: charged to
its example and the account's quota, as the query was made, but never evaluated. With `on_detection="ban"` (the
default) the first flagged row also bans its account: the account's later rows are refused, counted in the
ledger, never charged, never evaluated. With `"reject"` every row is screened, each flagged row is rejected
alone, and the account goes on. A remote service's own quota or rate refusal reads as the account's limit.

Two views: the attacker's (`targets.access.protocol.QueryAPI`: plan, query, allowance, what was charged) and the
operator's (`targets.access.protocol.OperatorView`: verdicts, the ledger, detections, bans). Time comes from a
`Clock` (`targets.access.clock`): simulated by default, where at `access.rate` queries per minute an account's
queries are spaced 60/rate seconds apart, one after another; or the wall clock. The ledger records when each call
started and ended. One call at a time (a lock): counts, quota windows and the detector's history are exact under
concurrent callers.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import numpy as np
from torch import nn

from gavel.targets.access.clock import Clock, SimulatedClock
from gavel.targets.access.errors import (
    AccessDenied,
    AccountBanned,
    AccountLimitReached,
    BudgetExhausted,
    QueryRejected,
)
from gavel.targets.access.policy import SHARED, AccessPolicy, Output, Weights
from gavel.targets.access.responder import Evaluator, Responder, ShieldResponder, blank
from gavel.targets.access.shield import Shield


@dataclass(frozen=True)
class Answers:
    """The Oracle's reply to a call, row by row."""

    values: np.ndarray
    """One answer per row (labels, or rows of scores); rows that were not evaluated hold zeros."""
    answered: np.ndarray
    """Which rows were evaluated (and charged)."""
    over_budget: np.ndarray
    """Which rows were refused because their example's budget was spent."""
    rejected: np.ndarray = field(default=None)  # type: ignore[assignment]
    """Which rows the detector flagged: charged to their example, never evaluated."""
    banned: np.ndarray = field(default=None)  # type: ignore[assignment]
    """Which rows were refused because their account is banned: not charged; another account may ask them."""
    account_banned: bool = False
    """Whether the account is banned after this call (what the API tells a banned caller)."""

    def __post_init__(self) -> None:
        for name in ("rejected", "banned"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.zeros(len(self.answered), dtype=bool))

    @property
    def refused_by_account(self) -> np.ndarray:
        """Rows refused by the account's quota for the window: another account may ask them."""
        return ~self.answered & ~self.over_budget & ~self.rejected & ~self.banned


@dataclass(frozen=True)
class LedgerEntry:
    """One call's rows of one example: asked for, evaluated, rejected by the detector (charged, not evaluated),
    refused because the account was banned (neither), by which account, in which call, and when (simulated
    seconds)."""

    example: Hashable
    account: int
    requested: int
    evaluated: int
    start: float
    end: float
    rejected: int = 0
    banned: int = 0
    call: int = 0


@dataclass(frozen=True)
class Detection:
    """A query the detector flagged: the account that sent it (banned, unless the operator only rejects), the
    example it was charged to, that example's query count with it, the call, and when (simulated seconds)."""

    account: int
    example: Hashable
    query: int
    call: int
    time: float


class Oracle:
    def __init__(
        self,
        judge: nn.Module | None,
        policy: AccessPolicy,
        *,
        input_shape: tuple[int, ...],
        n_classes: int,
        batch_size: int = 256,
        device: str = "cpu",
        shield: Shield | None = None,
        clock: Clock | None = None,
        responder: Responder | None = None,
        evaluator: Evaluator | None = None,
    ) -> None:
        """The judge behind `shield` (the judge alone without one), answered here; or, with `responder`, whatever
        answers it (a remote judge: `judge` is None), and `evaluator` the operator's own re-check of verdicts."""
        if responder is None:
            shield = shield or Shield(judge)
            if shield.output_filter is not None and policy.output == Output.LOGITS:
                raise ValueError(
                    "access.output=logits: an output filter acts on probabilities; allowed: probabilities, label"
                )
            responder = ShieldResponder(shield, n_classes=n_classes, batch_size=batch_size, device=device)
        self._responder = responder
        self._evaluator = evaluator or responder
        self.detections: list[Detection] = []
        self._calls = 0
        self.policy = policy
        self.input_shape = tuple(input_shape)
        self.n_classes = n_classes
        self.device = device
        self._clock = clock or SimulatedClock()
        self._origin = 0.0
        self._used: Counter = Counter()
        self._exhausted: set = set()
        self._planned: int | None = None
        self._keys: frozenset = frozenset()
        self._window_start: dict[int, float] = {}
        self._window_used: Counter = Counter()
        self.ledger: list[LedgerEntry] = []
        self._ledger_of: dict[Hashable, list[LedgerEntry]] = {}  # the same entries, by example
        self.screened_scores: list[np.ndarray] = []
        """The detector's score of every row it screened, call by call (for its ROC against benign traffic)."""
        self._lock = threading.RLock()  # one call at a time: counts, windows and the detector's history stay exact

    @property
    def clock(self) -> float:
        """Seconds on the Oracle's clock since the attack planned its examples (simulated unless it was given a wall
        clock)."""
        return self._clock.now() - self._origin

    @property
    def real_time(self) -> bool:
        """Whether the clock is the wall clock's (a judge behind a real API), not simulated."""
        return self._clock.real

    @property
    def banned(self) -> set[int]:
        """Accounts the operator banned (its detector flagged one of their queries)."""
        return self._responder.banned

    def plan(self, n_examples: int) -> None:
        """Declare how many examples the attack will attack: their keys are 0 .. n_examples - 1 (and `SHARED`
        for labelling), and they share the budget for `SHARED` queries. No other key is answered."""
        if self._planned is not None:
            raise RuntimeError("the attack's examples are planned once")
        self._planned = n_examples
        self._keys = frozenset(range(n_examples)) | {SHARED}
        self._origin = self._clock.now()  # the attack's time starts here, not when the judge was set up

    def query(self, x: np.ndarray, *, example: Hashable, account: int = 0) -> np.ndarray:
        """Answer for each row of `x`, all charged to `example` and `account`.

        Rows past the budget or the account's limit are never evaluated; the answers to the rows before them
        travel on the `BudgetExhausted` or `AccountLimitReached` raised instead (the account's limit when
        another account could still ask some of them); likewise `QueryRejected` when the detector flagged a
        row, and `AccountBanned` when the account was banned before the call.
        """
        answers = self.query_rows(x, [example] * len(x), account=account)
        evaluated = answers.values[answers.answered]
        if answers.rejected.any():
            # The answers before the first rejected row; without bans, rows after it were answered (and charged)
            # too, but a caller that reads answers in order cannot place them: they are dropped.
            first = int(np.flatnonzero(answers.rejected)[0])
            raise QueryRejected(example, account, answers.values[:first], banned=answers.account_banned)
        if answers.banned.any():
            raise AccountBanned(account, evaluated)
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
        with self._lock:
            return self._query_rows(x, examples, order, account)

    def _query_rows(self, x: np.ndarray, examples: list[Hashable], order: list[Hashable], account: int) -> Answers:
        self._roll_window(account)
        self._calls += 1
        n = len(x)
        if account in self.banned:  # refused unseen, uncharged: the account no longer exists for the operator
            for example in order:
                self._charge(example, account, examples.count(example), 0, banned=examples.count(example))
            none = np.zeros(n, dtype=bool)
            return Answers(self._blank(n), none, none, banned=~none, account_banned=True)
        # Each row's rank among its own example's rows, in row order, against that example's allowance.
        index = {example: k for k, example in enumerate(order)}
        codes = np.fromiter((index[example] for example in examples), dtype=np.int64, count=n)
        allowance = np.array([min(self.allowance(example), n) for example in order], dtype=np.int64)
        asked = np.bincount(codes, minlength=len(order))
        first = np.cumsum(asked) - asked
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(codes, kind="stable")] = np.arange(n) - np.repeat(first, asked)
        within_budget = rank < allowance[codes]
        quota = self.policy.account_allowance(self._window_used[account])
        admitted = within_budget & (np.cumsum(within_budget) <= quota)
        rows = np.flatnonzero(admitted)
        values = self._blank(n)
        answered, rejected, banned = (np.zeros(n, dtype=bool) for _ in range(3))
        account_banned = False
        flagged = np.zeros(n, dtype=bool)  # rejected by the detector itself (a withheld row is rejected, not flagged)
        call_start = self.clock
        if len(rows):
            reply = self._responder.respond(x[rows], account, self.policy.output)
            values[rows[reply.answered]] = reply.values[reply.answered]
            answered[rows[reply.answered]] = True
            flagged[rows[reply.rejected]] = True
            rejected[rows[reply.rejected]] = True
            if reply.withheld is not None:
                rejected[rows[reply.withheld]] = True
            banned[rows[reply.banned]] = True
            account_banned = reply.account_banned
            if reply.scores is not None:
                self.screened_scores.append(reply.scores)
        count = lambda mask: np.bincount(codes[mask], minlength=len(order))  # noqa: E731
        evaluated, refused, banned_rows = count(answered), count(rejected), count(banned)
        used_before = {example: self._used[example] for example in order}
        # rows within the budget left unanswered and uncharged: the account's quota (ours, or the service's)
        over, unasked = count(~within_budget), count(within_budget & ~answered & ~rejected & ~banned)
        for k, example in enumerate(order):
            counts = dict(rejected=int(refused[k]), banned=int(banned_rows[k]), call_start=call_start)
            self._charge(example, account, int(asked[k]), int(evaluated[k]), **counts)
            if over[k] and not unasked[k]:
                self._exhausted.add(example)  # its budget is spent, not merely the account's quota
        if flagged.any():
            charged = answered | rejected
            for row in np.flatnonzero(flagged):  # one row when the flag bans
                mine = codes[: row + 1] == codes[row]
                query = used_before[examples[row]] + int((charged[: row + 1] & mine).sum())
                self.detections.append(Detection(account, examples[row], query, self._calls, self.clock))
        return Answers(
            values, answered, ~within_budget, rejected=rejected, banned=banned, account_banned=account_banned
        )

    def _blank(self, n: int) -> np.ndarray:
        return blank(self.policy.output, n, self.n_classes)

    def queries(self, example: Hashable) -> int:
        return self._used[example]

    def exhausted(self, example: Hashable) -> bool:
        """Whether a query for `example` was refused because its budget had run out."""
        return example in self._exhausted

    @property
    def queries_total(self) -> int:
        """Queries charged: rows evaluated plus rows the detector rejected."""
        return sum(self._used.values())

    @property
    def rows_evaluated(self) -> int:
        """Rows the model evaluated for the attacker (its forward passes)."""
        return sum(entry.evaluated for entry in self.ledger)

    def rows(self, example: Hashable) -> list[tuple[int, float, float]]:
        """(account, start, end) in seconds on the Oracle's clock for each row charged to `example` (evaluated, or
        rejected by the detector: a call's rejected row is the last its account was heard on), in order."""
        out = []
        for entry in self._ledger_of.get(example, ()):
            charged = entry.evaluated + entry.rejected
            if charged:
                step = (entry.end - entry.start) / charged
                out += [(entry.account, entry.start + step * i, entry.start + step * (i + 1)) for i in range(charged)]
        return out

    @property
    def accounts_used(self) -> int:
        """Accounts that were charged a query (answered, or rejected by the detector)."""
        return len({entry.account for entry in self.ledger if entry.evaluated or entry.rejected})

    def open_weights(self) -> nn.Module:
        """The model the Oracle evaluates (the judge, or the judge inside a model defense), for white-box
        attacks: only when its weights are open."""
        if self.policy.weights != Weights.OPEN:
            raise AccessDenied(
                "access.weights=hidden: the judge's weights and gradients are not available; "
                "use a black-box attack (transfer, score-based or decision-based) or access.weights=open"
            )
        model = self._responder.model
        if model is None:
            raise AccessDenied("the judge is served elsewhere (a remote judge): no weights or gradients over its API")
        return model

    def allowance(self, example: Hashable) -> int | float:
        """What `example` may still be charged under the budget (`math.inf` when unlimited): the operator's
        published rule, which the attacker can read too."""
        return self.policy.allowance(example, self._used, self._planned)

    def _roll_window(self, account: int) -> None:
        start = self._window_start.get(account)
        if start is None or self.clock - start >= self.policy.window * 3600:
            self._window_start[account] = self.clock
            self._window_used[account] = 0

    def _charge(
        self,
        example: Hashable,
        account: int,
        requested: int,
        evaluated: int,
        rejected: int = 0,
        banned: int = 0,
        call_start: float | None = None,
    ) -> None:
        """Charge `example` and `account`; the ledger entry runs from the call's start (on the wall clock: before the
        service was asked) or, simulated, from where the rate limit's spacing has got to."""
        charged = evaluated + rejected
        self._used[example] += charged
        self._window_used[account] += charged
        start = call_start if self.real_time and call_start is not None else self.clock
        if self.policy.rate is not None:
            self._clock.wait(charged * 60.0 / self.policy.rate)
        if requested:
            entry = LedgerEntry(
                example, account, requested, evaluated, start, self.clock, rejected, banned, self._calls
            )
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

    def verdicts(self, x: np.ndarray) -> np.ndarray:
        """The verdict the API returns for each row (its answer's arg-max, after the output filter): what the
        operator's protocol acts on. The operator's own evaluation: not a query, not charged, not screened."""
        return self._evaluator.verdicts(self._check_inputs(x), self.policy.output)

    def served_probabilities(self, x: np.ndarray) -> np.ndarray:
        """The probabilities the API serves for each row (after the output filter; before a labels-only API
        keeps just their arg-max), for the operator's calibration figures; not a query."""
        return self._evaluator.served_probabilities(self._check_inputs(x))
