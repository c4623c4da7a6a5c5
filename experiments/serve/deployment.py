"""The judge `gavel serve` answers with, built exactly as a run builds it: the data for its input, a foreign judge
loaded and checked or a trained one from the model cache (trained once if missing), the defense deployed around it
(its shield), and a `ShieldResponder` answering through the shield. Nothing is recorded in MLflow: serving is not
an experiment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from gavel.defenses.base import OperatorKit
from gavel.experiments import runner
from gavel.experiments.settings import RunSettings
from gavel.experiments.training_stage import train_judge
from gavel.experiments.validation import ConfigError
from gavel.targets.access.policy import Output
from gavel.targets.access.responder import ShieldResponder

SERVING_ATTACK = "attack=rays"
"""What the config's `attack` is read as when serving. A service runs no attack, but the typed boundary checks the
access policy and the defense against one: the default (pgd, white box) would refuse a hidden API and every
detector. A decision-based attack asks nothing of the API, so the config reads for any access and defense."""

OUTPUTS_SHOWN = {
    Output.LOGITS: (Output.LOGITS, Output.PROBABILITIES, Output.LABEL),
    Output.PROBABILITIES: (Output.PROBABILITIES, Output.LABEL),
    Output.LABEL: (Output.LABEL,),
}
"""What a service of each `access.output` answers: the most it shows, and everything less."""


@dataclass(frozen=True)
class Deployment:
    responder: ShieldResponder
    input_shape: tuple[int, ...]
    n_classes: int
    output: Output
    """The most the service shows (`access.output`)."""
    description: str
    """How the startup line names the judge: `target=cnn defense=blacklight`."""
    provenance: Mapping[str, str] = field(default_factory=dict)
    """What the model's metadata says the judge is (`parameters.judge`: target, defense), for an auditor's run tags.
    It names the defense: an operator who would rather not say removes it here."""

    @property
    def outputs(self) -> tuple[Output, ...]:
        return OUTPUTS_SHOWN[self.output]


def deploy(settings: RunSettings, threads: int | None = None) -> Deployment:
    """The served judge behind its defense. Raises `ConfigError` (a subclass for what the judge or the data does not
    offer) or `SourceError`, one line each, before anything is served."""
    prepared = runner.prepare(settings)
    if getattr(prepared.judge, "service", None) is not None:  # a judge that answers elsewhere has no weights here
        raise ConfigError(
            f"target={settings.target.name}: that judge is already served elsewhere; allowed: a judge gavel trains "
            "or loads (cnn, mlp, torchscript, state_dict, onnx, mlflow, ...)"
        )
    device = runner.resolve_device(settings.device)
    data = prepared.data
    judge = prepared.judge if prepared.judge is not None else train_judge(settings, data, device).judge
    own = data.operator
    operator = OperatorKit(
        None if own is None else own.x, None if own is None else own.y, data.n_classes, settings.seed, device,
        settings.cache_dir,
    )  # fmt: skip
    shield = settings.defense_instance.deploy(judge.model, operator)
    if shield.output_filter is not None and settings.access.output == Output.LOGITS:
        raise ConfigError(
            f"access.output=logits: defense={settings.defense.name} filters probabilities; "
            "allowed: probabilities, label"
        )
    torch.set_num_threads(threads or settings.threads_for("provision"))
    responder = ShieldResponder(
        shield, n_classes=data.n_classes, batch_size=settings.oracle_batch_size, device=device
    )  # fmt: skip
    return Deployment(
        responder,
        tuple(data.input_shape),
        data.n_classes,
        settings.access.output,
        f"target={settings.target.name} defense={settings.defense.name} access.output={settings.access.output.value}",
        {"target": settings.target.name, "defense": settings.defense.name},
    )
