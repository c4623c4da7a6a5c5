"""Shared scaffolding for the tests that prove query accounting: every row the judge evaluates is an Oracle
query, counted exactly and within the access policy. `RowCounter` sees what the judge really evaluated,
`make_oracle`/`make_client` put the judge behind an access policy, `attackable` picks examples an attack
can start from, and `Digits` (the `digits` fixture in conftest.py) is the default config's data, judge and
surrogate, trained once into the session's model cache. Tests keep the `Oracle` for operator-side facts
(its ledger, accounts used) and hand the attack only an `AttackerClient`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from gavel.experiments.settings import RunSettings
from gavel.targets.access import AccessPolicy, AttackerClient, Oracle
from gavel.targets.datasets import Dataset
from gavel.targets.training import ModelConfig, ModelSpec, get_or_train, predict_labels


class RowCounter:
    """Counts every row the judge's forward evaluates (`rows`) and keeps each as a numpy array (`inputs`)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.rows = 0
        self.inputs: list[np.ndarray] = []
        self.handle = model.register_forward_hook(self.hook)

    def hook(self, module, inputs, output) -> None:
        self.rows += inputs[0].shape[0]
        self.inputs.extend(inputs[0].detach().cpu().numpy().copy())

    def __enter__(self) -> RowCounter:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


PLANNED = 64
"""Examples a test's attack may charge (keys 0..63): the Oracle answers only planned keys."""


def make_oracle(
    judge,
    data: Dataset,
    *,
    output: str = "label",
    budget=None,
    weights: str = "hidden",
    planned: int | None = PLANNED,
    **limits,
) -> Oracle:
    """The judge behind AccessPolicy(weights, output, budget, **limits), shaped like `data`, with `planned`
    examples planned (None: the test plans them itself)."""
    policy = AccessPolicy(weights, output, budget, **limits)
    oracle = Oracle(judge, policy, input_shape=data.input_shape, n_classes=data.n_classes)
    if planned is not None:
        oracle.plan(planned)
    return oracle


def make_client(
    judge,
    data: Dataset,
    *,
    output: str = "label",
    budget=None,
    weights: str = "hidden",
    planned: int | None = PLANNED,
    **limits,
) -> AttackerClient:
    """An attacker's client for `make_oracle(...)` with the same arguments."""
    oracle = make_oracle(judge, data, output=output, budget=budget, weights=weights, planned=None, **limits)
    client = AttackerClient(oracle)
    if planned is not None:
        client.plan(planned)
    return client


def attackable(judge, data: Dataset, first: int, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the first `keep` examples the judge gets right among the first `first` evaluation rows."""
    x, y = data.eval.x[:first], data.eval.y[:first]
    correct = predict_labels(judge, x) == y
    return x[correct][:keep], y[correct][:keep]


@dataclass(frozen=True)
class Digits:
    """The default config's data, its judge (seed 0) and, loaded on first use, its surrogate (seed 1)."""

    data: Dataset
    judge: torch.nn.Module
    surrogate_model: ModelConfig
    cache_dir: str

    @classmethod
    def load(cls, settings: RunSettings) -> Digits:
        data = settings.data_instance.load()
        spec = ModelSpec.of("judge", settings.target_instance.model, 0, data.judge, data.input_shape, data.n_classes)
        judge = get_or_train(spec, data.judge, settings.cache_dir).model
        (surrogate_model,) = settings.surrogate_instance.members
        return cls(data, judge, surrogate_model, str(settings.cache_dir))

    @cached_property
    def surrogate(self) -> torch.nn.Module:
        data = self.data
        spec = ModelSpec.of("surrogate", self.surrogate_model, 1, data.attacker, data.input_shape, data.n_classes)
        return get_or_train(spec, data.attacker, self.cache_dir).model


def replay_budget(result, attack: str, budget: int) -> int:
    """A budget smaller than `budget` within which `result` (an attack's run at `budget`) fooled at least one
    example: the median query of its successes. Chosen from the run itself, so a replay test holds on whatever
    weights this machine trains; fails, saying so, where the run fooled none (nothing to replay)."""
    fooled = result.queries_to_success > 0
    assert fooled.any(), f"{attack} fooled none of {len(fooled)} examples within {budget} queries: nothing to replay"
    return int(np.median(result.queries_to_success[fooled]))
