"""Hybrid attacker: transfer first, then a query attack on the examples that did not transfer.

The transfer stage crafts candidates on the surrogate and submits them one query each, up to
`budget_split` of each example's budget (at least one query, at most `transfer_tries`). What the query
stage starts from depends on the query attack (`QueryAttack.start`):
- score-based ("centre"): candidates are PGD runs from different random starts, all within eps; the query
  stage searches around the one the judge scored closest to the boundary;
- decision-based ("adversarial"): candidates are crafted at eps, 2 eps, 4 eps, ...; the first that fools the
  judge, even outside eps, is where the query stage starts walking back towards the original.
The query stage spends what is left of each example's budget: the Oracle charges both stages to the same
example.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Mapping

import numpy as np
from hydra.utils import get_class

from gavel.attacks.adapters.art import surrogate_estimator
from gavel.attacks.base import Attack, AttackerKit, AttackResult
from gavel.attacks.query.base import QueryAttack
from gavel.attacks.white_box.pgd import PGD
from gavel.targets.access import HYBRID, AccessPolicy, AttackerClient, QueryRefused
from gavel.targets.judges.base import FULL, Capabilities
from gavel.targets.params import PositiveFloat, PositiveInt, Range


class Hybrid(Attack):
    threat_model = HYBRID
    supports_targeted = True

    def __init__(
        self,
        *,
        eps: float,
        query: Mapping[str, Any],
        budget_split: Annotated[float, Range(minimum=0, below=1)] = 0.1,
        transfer_tries: PositiveInt = 4,
        eps_step: PositiveFloat = 0.01,
        max_iter: PositiveInt = 40,
        **common,
    ) -> None:
        super().__init__(eps=eps, **common)
        if not 0 <= budget_split < 1:
            raise ValueError(f"attack.budget_split={budget_split!r}: allowed: a number in [0, 1)")
        if transfer_tries < 1:
            raise ValueError(f"attack.transfer_tries={transfer_tries!r}: allowed: a positive integer")
        spec = dict(query)
        query_cls = get_class(spec.pop("_target_"))
        if not issubclass(query_cls, QueryAttack) or query_cls.start is None:
            raise ValueError(
                f"attack.query._target_={query_cls.__name__}: allowed: a query attack that can start from a "
                "transfer example (QueryAttack.start = 'centre' or 'adversarial')"
            )
        self.query_attack: QueryAttack = query_cls(eps=eps, **spec, **common)
        if self.query_attack.norm != self.norm:
            raise ValueError(f"attack.query: a {self.query_attack.norm}-norm attack under an L-{self.norm} hybrid")
        self.budget_split = budget_split
        self.transfer_tries = transfer_tries
        self.eps_step = eps_step
        self.max_iter = max_iter

    def check_access(self, policy: AccessPolicy, capabilities: Capabilities = FULL, judge: str = "the judge") -> None:
        self.query_attack.check_access(policy, capabilities, judge)

    def tries(self, budget: int | None) -> int:
        if budget is None:
            return self.transfer_tries
        return max(1, min(self.transfer_tries, math.floor(self.budget_split * budget)))

    def run(self, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> AttackResult:
        client = kit.client
        estimator = surrogate_estimator(kit.require_surrogate(), client, kit.device)
        tries = self.tries(client.policy.budget)
        x_adv = x.copy()
        queries_to_success = np.full(len(x), -1, dtype=np.int64)
        starts: list[np.ndarray | None] = [None] * len(x)
        closest = np.full(len(x), np.inf)
        for k in range(tries):
            pending = [i for i in range(len(x)) if queries_to_success[i] < 0 and not client.stopped(i)]
            if not pending:
                break
            candidates = self._candidates(estimator, x[pending], y[pending], k, kit)
            for i, candidate in zip(pending, candidates):
                if self.query_attack.start == "adversarial" and starts[i] is not None:
                    continue
                answer = self._submit(client, candidate, i)
                if answer is None:
                    continue
                label = int(answer.argmax()) if answer.ndim else int(answer)
                within = bool(self.goal.within(candidate[None], x[i : i + 1])[0])
                if self.goal.fooled([label], [y[i]])[0]:
                    if within:
                        x_adv[i], queries_to_success[i] = candidate, client.queries(i)
                    elif starts[i] is None:
                        starts[i] = candidate
                elif self.query_attack.start == "centre" and answer.ndim:
                    margin = self._margin(answer, int(y[i]))
                    if margin < closest[i]:
                        closest[i], starts[i] = margin, candidate

        rest = [i for i in range(len(x)) if queries_to_success[i] < 0 and not client.stopped(i)]
        if rest:
            followed = self.query_attack.run(x[rest], y[rest], kit.for_rows(rest, [starts[i] for i in rest]))
            for j, i in enumerate(rest):
                x_adv[i] = followed.x_adv[j]
                queries_to_success[i] = followed.queries_to_success[j]
        return AttackResult.charged(client, range(len(x)), x_adv, queries_to_success)

    def _candidates(self, estimator, x: np.ndarray, y: np.ndarray, k: int, kit: AttackerKit) -> np.ndarray:
        """Try k: a fresh random start within eps (score-based follow-up), or eps * 2**k (decision-based)."""
        scale = 2**k if self.query_attack.start == "adversarial" else 1
        pgd = PGD(
            eps=min(1.0, self.eps * scale),
            eps_step=self.eps_step * scale,
            max_iter=self.max_iter,
            num_random_init=1,
            targeted=self.targeted,
            target_class=self.target_class,
            seed=self.seed + 7919 * k,
        )
        return pgd.craft(estimator, x, y, kit)

    def _submit(self, client: AttackerClient, candidate: np.ndarray, i: int) -> np.ndarray | None:
        try:
            return client.query(candidate[None], example=i)[0]
        except QueryRefused:
            return None

    def _margin(self, scores: np.ndarray, label: int) -> float:
        """How far the judge's answer is from the goal: the true (or target) score over the best other one."""
        if self.targeted:
            return float(np.delete(scores, self.target_class).max() - scores[self.target_class])
        return float(scores[label] - np.delete(scores, label).max())
