"""PGD L-inf (Madry et al., 2018) on the judge itself: the white-box threat model, from ART or foolbox."""

from __future__ import annotations

import numpy as np
import torch
from art.attacks.evasion import ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier
from foolbox.attacks import L2PGD, LinfPGD
from torch import nn

from gavel.attacks.adapters import foolbox as foolbox_adapter
from gavel.attacks.adapters.art import seed_global_rngs
from gavel.attacks.base import AttackerKit
from gavel.attacks.white_box.base import BATCH_SIZE, WhiteBoxAttack
from gavel.targets.params import NonNegativeInt, PositiveFloat, PositiveInt


class PGD(WhiteBoxAttack):
    supports_targeted = True
    decay: float | None = None
    """Momentum on the gradient (MI-FGSM); None is plain PGD. Only ART has it."""

    def __init__(
        self,
        *,
        eps: float,
        eps_step: PositiveFloat = 0.01,
        max_iter: PositiveInt = 40,
        num_random_init: NonNegativeInt = 1,
        backend: foolbox_adapter.Backend = "art",
        **common,
    ) -> None:
        super().__init__(eps=eps, **common)
        self.eps_step = eps_step
        self.max_iter = max_iter
        self.num_random_init = num_random_init
        self.backend = foolbox_adapter.check_backend(backend)

    def craft(self, estimator: PyTorchClassifier, x: np.ndarray, y: np.ndarray, kit: AttackerKit) -> np.ndarray:
        seed_global_rngs(self.seed)
        if self.backend == "foolbox":
            return self.project(self._foolbox(estimator.model, estimator.device, x, self.library_labels(y)), x)
        attack = ProjectedGradientDescent(
            estimator,
            norm=np.inf if self.norm == "inf" else 2,
            eps=self.eps,
            eps_step=self.eps_step,
            decay=self.decay,
            max_iter=self.max_iter,
            num_random_init=self.num_random_init,
            targeted=self.targeted,
            batch_size=BATCH_SIZE,
            verbose=False,
        )
        return self.project(attack.generate(x, y=self.library_labels(y)), x)

    def _foolbox(self, model: nn.Module, device, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """foolbox's PGD. It starts once; further starts are ART's restarts: one replaces the result where it
        fools the model and the earlier ones did not."""
        fmodel = foolbox_adapter.pytorch_model(model, device)
        pgd = (LinfPGD if self.norm == "inf" else L2PGD)(
            abs_stepsize=self.eps_step, steps=self.max_iter, random_start=self.num_random_init > 0
        )
        out = []
        for batch in range(0, len(x), BATCH_SIZE):
            inputs = torch.from_numpy(x[batch : batch + BATCH_SIZE]).to(fmodel.device)
            wanted = torch.from_numpy(labels[batch : batch + BATCH_SIZE]).to(fmodel.device)
            goal = foolbox_adapter.criterion(wanted, self.targeted)
            _, best, fooled = pgd(fmodel, inputs, goal, epsilons=self.eps)
            for _ in range(1, self.num_random_init):
                _, x_adv, success = pgd(fmodel, inputs, goal, epsilons=self.eps)
                take = success & ~fooled
                best[take], fooled = x_adv[take], fooled | success
            out.append(best.cpu().numpy())
        return np.concatenate(out)
