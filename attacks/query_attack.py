"""Query attacks run one example at a time, so each example's queries are charged to it alone."""
from __future__ import annotations

from abc import abstractmethod

import numpy as np
from art.attacks import EvasionAttack
from torch import nn

from attacks.art_adapter import AttackerDone, OracleClassifier, QuerySession, seed_global_rngs
from attacks.base import Attack, AttackResult
from targets.oracle import BudgetExhausted, Oracle


class QueryAttack(Attack):
    """An ART query attack against the Oracle, under the access policy's per-example budget.

    The attacker stops at the first answer that shows the judge fooled within eps. When the budget runs out
    first, the attacker keeps its best result so far: a fooling input it has seen, or else the original.
    """

    def __init__(self, *, eps: float, seed: int = 0, reuse_answers: bool = True) -> None:
        super().__init__(eps=eps, seed=seed)
        self.reuse_answers = reuse_answers

    @abstractmethod
    def art_attack(self, estimator: OracleClassifier, budget: int | None) -> EvasionAttack:
        """The configured ART attack over `estimator`; `budget` (queries per example) is public knowledge."""

    def run(self, oracle: Oracle, x: np.ndarray, y: np.ndarray, *, surrogate: nn.Module | None = None) -> AttackResult:
        x_adv = x.copy()
        queries_to_success = np.full(len(x), -1, dtype=np.int64)
        for i in range(len(x)):
            session = QuerySession(oracle, i, x[i], int(y[i]), self.eps, self.reuse_answers)
            attack = self.art_attack(OracleClassifier(session), oracle.policy.budget)
            seed_global_rngs(self.seed, i)
            candidate = None
            try:
                candidate = attack.generate(x[i : i + 1], y=y[i : i + 1])[0]
            except (AttackerDone, BudgetExhausted):
                pass
            if session.success is not None:
                x_adv[i] = session.success
                queries_to_success[i] = session.queries_to_success
            elif candidate is not None:
                x_adv[i] = self.project(candidate, x[i])
        return AttackResult(
            x_adv=x_adv,
            queries=np.array([oracle.queries(i) for i in range(len(x))], dtype=np.int64),
            budget_exhausted=np.array([oracle.exhausted(i) for i in range(len(x))]),
            queries_to_success=queries_to_success,
        )
