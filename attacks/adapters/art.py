"""ART estimators over gavel's handles: the judge's open weights, a surrogate, or the attacker's client.

`OracleClassifier` is how ART's query attacks reach a hidden judge: every `predict` goes through a
`QuerySession`, hence through the Oracle, so no ART call can evaluate the judge uncounted; its gradient
methods raise `AccessDenied` unless the judge's weights are open.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch
from art.estimators.classification import BlackBoxClassifierNeuralNetwork, PyTorchClassifier
from torch import nn

from gavel.attacks.base import Goal, as_scores
from gavel.targets.access import AttackerClient, QueryRefused


def pytorch_estimator(
    model: nn.Module,
    input_shape: tuple[int, ...],
    n_classes: int,
    device: str,
    optimizer: torch.optim.Optimizer | None = None,
) -> PyTorchClassifier:
    """An ART classifier over a model the attacker holds (open judge weights, or its own surrogate) on `device`
    (where its tensors are: a judge loaded from a file may hold no parameters to ask); `optimizer` for one ART will
    train (model extraction)."""
    device = torch.device(device)
    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        optimizer=optimizer,
        input_shape=tuple(input_shape),
        nb_classes=n_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


def surrogate_estimator(surrogate: nn.Module, client: AttackerClient, device: str) -> PyTorchClassifier:
    """The attacker's own model (or a view of it), on `device`, as an ART classifier."""
    return pytorch_estimator(surrogate, client.input_shape, client.n_classes, device)


def white_box_estimator(
    client: AttackerClient, view: Callable[[nn.Module], nn.Module] | None = None
) -> PyTorchClassifier:
    """The judge as an ART classifier, where the operator serves it (seen through `view`: BPDA, EOT); raises
    `AccessDenied` when its weights are hidden."""
    model = client.open_weights() if view is None else view(client.open_weights())
    return pytorch_estimator(model, client.input_shape, client.n_classes, client.device)


class OracleClassifier(BlackBoxClassifierNeuralNetwork):
    """A black-box ART classifier whose predictions are the Oracle's answers for one example's session."""

    def __init__(self, session: "QuerySession") -> None:
        super().__init__(
            predict_fn=session.predict,
            input_shape=session.client.input_shape,
            nb_classes=session.client.n_classes,
            clip_values=(0.0, 1.0),
        )
        self.client = session.client

    def loss_gradient(self, x: np.ndarray, y: np.ndarray, **kwargs) -> np.ndarray:
        return white_box_estimator(self.client).loss_gradient(x, y, **kwargs)

    def class_gradient(self, x: np.ndarray, label=None, **kwargs) -> np.ndarray:
        return white_box_estimator(self.client).class_gradient(x, label=label, **kwargs)


class AttackerDone(Exception):
    """Raised into the attack library to stop it: the attacker has seen the judge fooled within eps."""


class QuerySession:
    """What the attacker of one example knows: the answers it bought, and whether one of them fooled the judge.

    Repeated inputs are answered from the attacker's own record instead of being bought again (ART's Square
    re-asks for inputs it has already queried; a real attacker would not pay twice). Each answered row is
    checked against the attacker's goal. `submit` maps what the library proposes to what the attacker
    actually sends (the identity, or a projection into the threat model's ball when a library works around
    another centre).
    """

    def __init__(
        self,
        client: AttackerClient,
        example: int,
        x0: np.ndarray,
        y0: int,
        goal: Goal,
        reuse_answers: bool,
        submit: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.client = client
        self.example = example
        self.x0 = x0
        self.y0 = int(y0)
        self.goal = goal
        self.reuse_answers = reuse_answers
        self.submit = submit
        self.known: dict[bytes, np.ndarray] = {}
        self.success: np.ndarray | None = None
        self.queries_to_success = -1

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Answers as ART expects them: one row of scores (or a one-hot label) per input."""
        x = np.asarray(x, dtype=np.float32)
        if self.submit is not None:
            x = self.submit(x)
        # The API takes inputs in [0, 1]; a library step that overshoots by a rounding error is clipped on
        # the attacker's side rather than refused.
        x = np.clip(x, 0.0, 1.0)
        keys = [row.tobytes() for row in x]
        to_buy: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in to_buy and not (self.reuse_answers and key in self.known):
                to_buy[key] = i
        rows = list(to_buy.values())
        spent_before = self.client.queries(self.example)
        try:
            answers = self.client.query(x[rows], example=self.example)
        except QueryRefused as refused:
            self._record(x, rows[: len(refused.answered)], keys, refused.answered, spent_before)
            raise
        self._record(x, rows, keys, answers, spent_before)
        if self.success is not None:
            raise AttackerDone
        return np.stack([self.known[key] for key in keys])

    def _record(self, x, rows, keys, answers, spent_before) -> None:
        scores = as_scores(answers, self.client.n_classes)
        for position, (row, score) in enumerate(zip(rows, scores)):
            self.known[keys[row]] = score
            if self.success is None and self._reached(x[row], int(score.argmax())):
                self.success = x[row].copy()
                self.queries_to_success = spent_before + position + 1

    def _reached(self, row: np.ndarray, label: int) -> bool:
        return bool(self.goal.fooled([label], [self.y0])[0] and self.goal.within(row[None], self.x0[None])[0])


def seed_global_rngs(*seed: int) -> None:
    """ART's attacks draw from numpy's global generator (and Python's, for L2 Square)."""
    value = int(np.random.SeedSequence(list(seed)).generate_state(1)[0])
    np.random.seed(value)
    random.seed(value)
    torch.manual_seed(value)


class _GlobalSeededRandomState(np.random.RandomState):
    def __init__(self, seed=None) -> None:
        super().__init__(np.random.randint(2**31) if seed is None else seed)


class SeededInitialSample:
    """Mixed into an ART attack that draws its starting inputs in `_init_sample` from an unseeded
    `np.random.RandomState()` (HopSkipJump, Boundary), so that no two runs agree: here that generator is seeded
    from numpy's global one, which the attack seeds per example."""

    def _init_sample(self, *args, **kwargs):
        with seeded_random_states():
            return super()._init_sample(*args, **kwargs)


@contextmanager
def seeded_random_states():
    """Within it, `np.random.RandomState()` without a seed (which some ART attacks create, so that no two runs
    agree) draws its seed from numpy's global generator, which the attack seeds per example."""
    original = np.random.RandomState
    np.random.RandomState = _GlobalSeededRandomState
    try:
        yield
    finally:
        np.random.RandomState = original
