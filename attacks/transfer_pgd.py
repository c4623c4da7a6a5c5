"""Transfer attack: PGD L-inf crafted on the attacker's surrogate (ART or foolbox), each result submitted once
through the Oracle."""
from __future__ import annotations

import numpy as np
from torch import nn

from attacks.art_adapter import surrogate_estimator
from attacks.base import Attack, AttackResult
from attacks.client import AttackerClient
from attacks.pgd import PGD
from targets.datasets import Pool
from targets.oracle import QueryRefused


def submit_once(attack: Attack, client: AttackerClient, x_adv: np.ndarray, y: np.ndarray) -> AttackResult:
    """Send each crafted input to the API once; the answer tells the attacker whether it worked."""
    queries_to_success = np.full(len(x_adv), -1, dtype=np.int64)
    for i in range(len(x_adv)):
        if client.out_of_accounts:
            client.stop(i)
            continue
        try:
            answer = client.query(x_adv[i : i + 1], example=i)
        except QueryRefused:
            continue
        label = int(answer[0] if answer.ndim == 1 else answer[0].argmax())
        if attack.goal.fooled([label], [y[i]])[0]:
            queries_to_success[i] = 1
    return AttackResult(
        x_adv=x_adv,
        queries=np.array([client.queries(i) for i in range(len(x_adv))], dtype=np.int64),
        budget_exhausted=np.array([client.stopped(i) for i in range(len(x_adv))]),
        queries_to_success=queries_to_success,
    )


class TransferPGD(PGD):
    threat_model = "transfer"
    needs_surrogate = True

    def run(
        self,
        client,
        x: np.ndarray,
        y: np.ndarray,
        *,
        surrogate: nn.Module | None = None,
        attacker_data: Pool | None = None,
    ) -> AttackResult:
        model = None if surrogate is None else self.crafting_model(surrogate)
        x_adv = self.craft(surrogate_estimator(model, client), x, y)
        return submit_once(self, client, x_adv, y)

    def crafting_model(self, surrogate: nn.Module) -> nn.Module:
        """The model the attack's gradients come from: the surrogate itself, or a variant of it."""
        return surrogate
