"""foolbox, the second attack backend (`attack.backend=foolbox`), over gavel's handles.

`OracleModel` is how foolbox reaches a hidden judge: every call is one `predict` of the example's
`QuerySession`, so foolbox's queries are cached, counted, checked against the goal and refused exactly like
ART's, and the session's `AttackerDone` and `QueryRefused` stop the library mid-run.
"""

from __future__ import annotations

from typing import Callable, Literal, get_args

import eagerpy as ep
import foolbox
import numpy as np
import torch
from foolbox.attacks.base import MinimizationAttack
from foolbox.criteria import Criterion, Misclassification, TargetedMisclassification
from torch import nn

Backend = Literal["art", "foolbox"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"attack.backend={backend!r}: allowed: {', '.join(BACKENDS)}")
    return backend


def criterion(labels: torch.Tensor, targeted: bool) -> Criterion:
    """What foolbox must reach: any other verdict than `labels`, or the verdict `labels` when targeted."""
    return TargetedMisclassification(labels) if targeted else Misclassification(labels)


def pytorch_model(model: nn.Module, device) -> foolbox.PyTorchModel:
    """A model the attacker holds (open judge weights, or its own surrogate) on `device`, for foolbox's gradient
    attacks."""
    return foolbox.PyTorchModel(model, bounds=(0.0, 1.0), device=device)


class OracleModel(foolbox.Model):
    """The judge behind the API as a foolbox model: inputs go to `predict` (a `QuerySession.predict`, or an
    `OracleClassifier.predict`, which calls it) and its scores (one-hot rows for a label-only API) come back."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray]) -> None:
        self._predict = predict

    @property
    def bounds(self) -> foolbox.types.Bounds:
        return foolbox.types.Bounds(0.0, 1.0)

    def __call__(self, inputs):
        x, restore_type = ep.astensor_(inputs)
        scores = self._predict(x.raw.detach().cpu().numpy().astype(np.float32))
        return restore_type(ep.astensor(torch.from_numpy(np.asarray(scores, dtype=np.float32)).to(x.raw.device)))


class FoolboxQueryAttack:
    """A foolbox minimisation attack behind ART's `generate(x, y, x_adv_init)`, so that `QueryAttack.run`
    drives it one example at a time exactly as it drives an ART attack."""

    def __init__(
        self, model: OracleModel, attack: MinimizationAttack, *, targeted: bool, init_attack: MinimizationAttack
    ) -> None:
        self.model = model
        self.attack = attack
        self.targeted = targeted
        self.init_attack = init_attack

    def generate(self, x: np.ndarray, y: np.ndarray, x_adv_init: np.ndarray | None = None) -> np.ndarray:
        inputs = torch.from_numpy(np.asarray(x, dtype=np.float32))
        goal = criterion(torch.from_numpy(np.asarray(y)).long(), self.targeted)
        if x_adv_init is None:
            start = self.init_attack.run(self.model, inputs, goal)
            # foolbox raises when no start fools the judge, where ART hands the original back: ask first, as
            # ART does. The start is the init attack's last question, so with reuse_answers this costs nothing.
            if not goal(start, self.model(start)).all():
                return np.asarray(x, dtype=np.float32)
        else:
            start = torch.from_numpy(np.asarray(x_adv_init, dtype=np.float32))
        return self.attack.run(self.model, inputs, goal, starting_points=start).numpy()
