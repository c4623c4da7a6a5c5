"""The defense contract: what the operator deploys in front of the judge.

A defense is configured once (`conf/defense/<name>.yaml`: hyperparameters in `__init__`, checked at the config
boundary), checked against the access policy and the attacker's threat model (`check`), and deployed on the
judge with the operator's own resources (`deploy`) into a `Shield`: the model the Oracle evaluates, a filter on
its answers, a detector on its queries. Its cost to honest users is measured by the runner, never assumed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from torch import nn

from gavel.targets.access import AccessPolicy, Output, ThreatModel
from gavel.targets.access.shield import Shield
from gavel.targets.params import conforms, declared_hyperparameters, describe_type

ALL_OUTPUTS = (Output.LOGITS, Output.PROBABILITIES, Output.LABEL)


@dataclass(frozen=True)
class OperatorKit:
    """What the operator deploys a defense with: its own data (to train an encoder, to set a detector's threshold at a
    target false-positive rate; None where the data names none, which only a defense that needs none is deployed
    with), a seed, the device and the model cache."""

    benign_x: np.ndarray | None
    benign_y: np.ndarray | None
    n_classes: int
    seed: int
    device: str = "cpu"
    cache_dir: Path | None = None


class Defense(ABC):
    kind: ClassVar[str]
    """none | output (output hiding) | detection (stateful detector with bans) | randomised | ..."""
    outputs: ClassVar[tuple[Output, ...]] = ALL_OUTPUTS
    """The API outputs (`access.output`) the defense applies to."""
    needs_operator_data: ClassVar[bool] = False
    """Whether it is deployed with the operator's own data (`OperatorKit.benign_x`): a detector's threshold."""

    def check(self, policy: AccessPolicy, threat_model: ThreatModel, name: str) -> None:
        """Refuse (ValueError, one line naming the key and what is allowed) a deployment that cannot apply."""
        if policy.output not in self.outputs:
            allowed = ", ".join(o.value for o in self.outputs)
            raise ValueError(
                f"access.output={policy.output.value}: defense={name} does not apply to it; allowed: {allowed}"
            )

    def check_judge(self, judge: nn.Module) -> None:
        """Refuse (ValueError, one line) a judge the defense cannot be deployed on (a judge of the user's own, checked
        before any run; gavel's trained judges fit every defense)."""

    def check_hyperparameters(self) -> None:
        """The config boundary checks the same annotations, with the same words; this holds a defense built in
        code (a test, a bench) to them too. Each hyperparameter is stored under its own name."""
        for key, hint in declared_hyperparameters(type(self).__mro__).items():
            value = getattr(self, key)
            if not conforms(value, hint):
                raise ValueError(f"defense.{key}={value!r}: allowed: {describe_type(hint)}")

    @abstractmethod
    def deploy(self, judge: nn.Module, operator: OperatorKit) -> Shield:
        """The shield around `judge`: what the Oracle evaluates, filters and watches."""
