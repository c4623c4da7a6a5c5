"""The real Hydra config for an attack, under an access policy its threat model allows, shrunk for speed."""

from __future__ import annotations

from hydra.utils import get_class

from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.targets.access import DECISION_BASED, HYBRID, POISONING, SCORE_BASED, TRANSFER, WHITE_BOX, ThreatModel

# The access each threat model is run under in the smoke tests, with budgets small enough to be quick.
ACCESS_FOR: dict[ThreatModel, list[str]] = {
    WHITE_BOX: ["access=open"],
    TRANSFER: ["access=hidden_label"],
    SCORE_BASED: ["access=hidden_probabilities", "access.budget=30"],
    DECISION_BASED: ["access=hidden_label", "access.budget=40"],
    POISONING: ["access=hidden_label", "poison=badnets", "poison.fraction=0.05", "target.train.epochs=5"],
}
TINY = ["n_examples=8"]

# Attack hyperparameters shrunk for the smoke tests, applied to whichever of them an attack has.
SHRINK = {"max_iter": 3, "init_eval": 10, "max_eval": 20}


def threat_model_of(attack: str) -> ThreatModel:
    """The attack's threat model; for a hybrid attacker, its query stage's (which decides the access it needs)."""
    node = compose_config([f"attack={attack}"]).attack
    threat_model = get_class(node._target_).threat_model
    if threat_model == HYBRID:
        return get_class(node.query._target_).threat_model
    return threat_model


def tiny_overrides(attack: str, *overrides: str) -> list[str]:
    """The overrides of `tiny_config`, for a test that composes the config itself (or runs the CLI)."""
    base = [f"attack={attack}", *ACCESS_FOR[threat_model_of(attack)], *TINY]
    keys = compose_config(base).attack
    small = [f"attack.{key}={value}" for key, value in SHRINK.items() if key in keys]
    return [*base, *small, *overrides]


def tiny_config(attack: str, *overrides: str):
    """The real config for `attack`, under an access policy its threat model allows, shrunk for speed."""
    return compose_config(tiny_overrides(attack, *overrides))


def tiny_settings(attack: str, *overrides: str) -> RunSettings:
    """`tiny_config(...)` read through the typed config boundary."""
    return RunSettings.from_config(tiny_config(attack, *overrides))
