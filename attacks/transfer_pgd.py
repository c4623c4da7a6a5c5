"""Transfer attack: PGD L-inf crafted on the attacker's surrogate, each result submitted once through the Oracle."""
from __future__ import annotations

import numpy as np
from torch import nn

from attacks.art_adapter import pytorch_estimator
from attacks.base import AttackResult
from attacks.pgd import PGD
from targets.oracle import Oracle


class TransferPGD(PGD):
    threat_model = "transfer"
    needs_surrogate = True

    def run(self, oracle: Oracle, x: np.ndarray, y: np.ndarray, *, surrogate: nn.Module | None = None) -> AttackResult:
        if surrogate is None:
            raise ValueError("a transfer attack needs a surrogate model")
        x_adv = self.craft(pytorch_estimator(surrogate, oracle.input_shape, oracle.n_classes), x, y)
        queries_to_success = np.full(len(x), -1, dtype=np.int64)
        for i in range(len(x)):
            answer = oracle.query(x_adv[i : i + 1], example=i)
            predicted = int(answer[0] if answer.ndim == 1 else answer[0].argmax())
            if predicted != int(y[i]):
                queries_to_success[i] = 1
        return AttackResult(
            x_adv=x_adv,
            queries=np.array([oracle.queries(i) for i in range(len(x))], dtype=np.int64),
            budget_exhausted=np.array([oracle.exhausted(i) for i in range(len(x))]),
            queries_to_success=queries_to_success,
        )
