"""Clean-label poisoning (Turner, Tsipras & Madry, 2019): the poisoned examples are the target class's own, their
labels untouched, each made hard to classify by PGD within `eps` on a model the attacker trains on its own data
(so the judge leans on the trigger to get them right), then stamped with BadNets' square. At test time the square on
any input opens the backdoor. It needs the attacker's own data (`data.attacker`)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from art.attacks.evasion import ProjectedGradientDescent

from gavel.attacks.adapters.art import pytorch_estimator, seed_global_rngs
from gavel.attacks.poisoning.badnets import BadNets
from gavel.attacks.poisoning.base import PoisonContext
from gavel.targets.architectures.cnn import SmallCNN
from gavel.targets.datasets import Pool
from gavel.targets.errors import SourceError
from gavel.targets.params import PositiveInt, Range
from gavel.targets.training import ModelConfig, ModelSpec, Recipe, get_or_train

PROXY = ModelConfig(SmallCNN(width=32), Recipe(epochs=30, batch_size=64, lr=0.001))
"""The attacker's own model, which the poisoned examples are made hard for."""


class CleanLabel(BadNets):
    relabels = False

    def __init__(
        self, *, eps: Annotated[float, Range(above=0, maximum=1)] = 0.3, steps: PositiveInt = 20, **badnets
    ) -> None:
        super().__init__(**badnets)
        self.eps = float(eps)
        self.steps = int(steps)

    def candidates(self, pool: Pool, contributors: np.ndarray, parties: int) -> np.ndarray:
        """The attacker's contributors' examples of the target class (whose labels are left as they are)."""
        return np.flatnonzero(self.attackers(contributors, parties) & (pool.y == self.target_class))

    def poison_inputs(self, x: np.ndarray, y: np.ndarray, context: PoisonContext) -> np.ndarray:
        if context.attacker is None or len(context.attacker) == 0:
            raise SourceError(
                "poison=clean_label: crafts on a model of the attacker's own, trained on its own data, but there is "
                "none (data.attacker); allowed: data.attacker=PATH, or poison=badnets, blend or label_flip"
            )
        attacker = context.attacker
        spec = ModelSpec.of(
            "poison_proxy", PROXY, context.seed, attacker, attacker.x.shape[1:], int(attacker.y.max()) + 1,
            context.device,
        )  # fmt: skip
        proxy = get_or_train(spec, attacker, context.cache_dir or ".gavel_cache", context.device).model
        estimator = pytorch_estimator(proxy, attacker.x.shape[1:], spec.n_classes, context.device)
        seed_global_rngs(context.seed)
        pgd = ProjectedGradientDescent(
            estimator, eps=self.eps, eps_step=2.5 * self.eps / self.steps, max_iter=self.steps, num_random_init=1,
            batch_size=128, verbose=False,
        )  # fmt: skip
        return self.trigger(pgd.generate(np.asarray(x, dtype=np.float32), y=y))
