"""Query attacks (score-based and decision-based), from one of two kinds of backend:

- gavel's own batched implementations (`backend=gavel`, where an attack has one): every example still in play
  advances in the same step through `attacks.query.engine.QueryEngine`, each row charged to its own example,
  each budget spent in full (`run_batched`);
- an attack library (ART, or foolbox) driven one example at a time through a `QuerySession`, so that each
  example's queries are charged to it alone (`run_library`): the reference backends.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Literal

import numpy as np

from gavel.attacks.adapters.art import AttackerDone, OracleClassifier, QuerySession, seed_global_rngs
from gavel.attacks.base import Attack, AttackerKit, AttackResult
from gavel.attacks.query.engine import QueryEngine
from gavel.targets.access import QueryRefused
from gavel.targets.params import NonNegativeFloat, PositiveInt

Backend = Literal["gavel", "art", "foolbox"]


class QueryAttack(Attack):
    """An ART (or foolbox) query attack against the Oracle, under the access policy's per-example budget.

    The attacker stops at the first answer that shows the judge fooled within eps. When the budget or its
    accounts run out first, it keeps its best result so far: a fooling input it has seen, or else the
    original.

    A run can start from given inputs (a hybrid attacker's transfer examples). How depends on `start`:
    "adversarial" attacks walk back from an input that already fools the judge (handed to the library as its
    initial adversarial); "centre" attacks search around the start instead of the original, every query
    projected back into the threat model's ball around the original; None: the attack cannot use a start.
    """

    start: ClassVar[str | None] = None
    backends: ClassVar[tuple[str, ...]] = ("art",)
    """The backends this attack has; the first is its default."""

    def __init__(
        self,
        *,
        eps: float,
        reuse_answers: bool = True,
        backend: Backend | None = None,
        max_queries: PositiveInt = 10_000,
        eot_samples: PositiveInt = 1,
        blinding: NonNegativeFloat = 0.0,
        adaptive: bool = False,
        **common,
    ) -> None:
        super().__init__(eps=eps, **common)
        if backend is not None and backend not in self.backends:
            raise ValueError(f"attack.backend={backend!r}: allowed: {', '.join(self.backends)}")
        self.backend = backend or self.backends[0]
        if eot_samples > 1 and self.backend != "gavel":
            raise ValueError(
                f"attack.eot_samples={eot_samples}: a library backend asks once per point; allowed: 1, "
                "or more with attack.backend=gavel"
            )
        self.eot_samples = eot_samples
        """Answers asked for (and paid for) per point, averaged: against a judge that answers at random."""
        if (blinding > 0 or adaptive) and self.backend != "gavel":
            raise ValueError(
                "attack.blinding and attack.adaptive change the queries an attack sends; a library backend's loop is "
                "closed; allowed: blinding=0 and adaptive=false, or attack.backend=gavel"
            )
        self.blinding = float(blinding)
        """Query blinding against a stateful detector: random noise of this size on every query, within eps."""
        self.adaptive = adaptive
        """OARS-style adaptation (Feng et al., CCS 2023): after each rejected query the attack widens its
        sampling (larger squares, a larger probe radius) so that its next queries look less alike."""
        self.reuse_answers = reuse_answers
        self.max_queries = max_queries
        """Each example's cap when the budget is unlimited (gavel's backend spends budgets in full)."""

    @abstractmethod
    def library_attack(self, estimator: OracleClassifier, budget: int | None) -> Any:
        """The configured library attack over `estimator` (an ART `EvasionAttack`, or a foolbox attack behind
        the same `generate`). `budget` is what this example has left of its query budget (None: unlimited):
        the attacker knows it and may plan for it."""

    def generate(
        self, attack: Any, x: np.ndarray, y: np.ndarray, adversarial: np.ndarray | None, kit: AttackerKit
    ) -> np.ndarray:
        """Run the library on one example, from an input that already fools the judge when one is given."""
        if adversarial is None:
            return attack.generate(x, y=y)
        return attack.generate(x, y=y, x_adv_init=adversarial)

    def run(self, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> AttackResult:
        """Each row is charged to its key in `kit` (a hybrid attacker hands on the keys its transfer stage
        already spent on, and each example's remaining budget is what is left)."""
        if self.backend == "gavel":
            return self.run_batched(x, y, kit)
        return self.run_library(x, y, kit)

    def engine(self, name: str, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> QueryEngine:
        """The batched engine this attack's gavel backend asks through."""
        return QueryEngine(
            name,
            x,
            y,
            self.goal,
            kit,
            max_queries=self.max_queries,
            device=kit.device,
            eot_samples=self.eot_samples,
            blinding=self.blinding,
            seed=self.seed,
        )

    def run_batched(self, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> AttackResult:
        """gavel's own batched implementation; attacks that list "gavel" in `backends` define it."""
        raise TypeError(f"{type(self).__name__} has no gavel backend; allowed: {', '.join(self.backends)}")

    def run_library(self, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> AttackResult:
        """The library backend, one example at a time."""
        client = kit.client
        keys = kit.keys_for(len(x))
        x_adv = x.copy()
        queries_to_success = np.full(len(x), -1, dtype=np.int64)
        labels = self.library_labels(y)
        for i, key in enumerate(keys):
            if client.out_of_accounts:  # every account is spent: nothing more can be asked
                client.stop(key)
                continue
            origin = x[i : i + 1]
            centre, submit, adversarial = origin, None, None
            start = kit.start(i)
            if start is not None and self.start == "adversarial":
                adversarial = start[None]
            elif start is not None and self.start == "centre":
                centre = start[None]
                submit = lambda z, origin=origin: self.project(z, np.broadcast_to(origin, z.shape))  # noqa: E731
            budget_left = client.budget_left(key)
            if budget_left is not None and budget_left < 1:  # an earlier stage spent it all
                client.stop(key)
                continue
            session = QuerySession(client, key, x[i], int(y[i]), self.goal, self.reuse_answers, submit)
            attack = self.library_attack(OracleClassifier(session), budget_left)
            seed_global_rngs(self.seed, key)
            candidate = None
            try:
                candidate = self.generate(attack, centre, labels[i : i + 1], adversarial, kit)
            except (AttackerDone, QueryRefused):
                pass
            if session.success is not None:
                x_adv[i] = session.success
                queries_to_success[i] = session.queries_to_success
            elif candidate is not None:
                x_adv[i] = self.project(candidate, origin)[0]
        return AttackResult.charged(client, keys, x_adv, queries_to_success)
