"""A wrong value is refused at the typed config boundary with one line naming the key and what is allowed,
before any training. (The CLI's exit status for it is tested in tests/integration/test_cli.py.)"""

from __future__ import annotations

import pytest
from helpers.configs import threat_model_of

from gavel.attacks.base import Attack
from gavel.experiments.config import compose_config, group_options
from gavel.experiments.settings import RunSettings
from gavel.experiments.validation import ConfigError, check_overrides
from gavel.targets.access import DECISION_BASED, POISONING, SCORE_BASED, TRANSFER, WHITE_BOX, AccessPolicy


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["access.budget=-1"], "access.budget=-1: allowed: a positive integer"),
        (["access.budget=0"], "access.budget=0: allowed: a positive integer"),
        (["access.budget=lots"], "access.budget='lots': allowed"),
        (["attack.eps=0"], r"attack.eps=0: allowed: a number in \(0, 1\]"),
        (["attack.eps=1.5"], r"attack.eps=1.5: allowed: a number in \(0, 1\]"),
        (["access=hidden_label"], "attack=pgd: .*access.weights=hidden; allowed: access.weights=open"),
        (["attack=square", "access=hidden_label"], "attack=square: .*access.output=label; allowed"),
        (["access.output=scores"], "access.output='scores': allowed: logits, probabilities, label"),
        (["access.weights=closed"], "access.weights='closed': allowed: open, hidden"),
        (["n_examples=0"], "n_examples=0: allowed: a positive integer"),
        (["target=resnet18", "target.arch.name=vit"], "target.arch.name='vit': allowed: resnet18, resnet34"),
        (["+target.arch.depth=3"], "target.arch.depth: not a parameter of SmallCNN; allowed: width"),
        (["target.arch._target_=nowhere.Net"], "target.arch._target_='nowhere.Net': not importable; allowed: an "),
        (["target.arch._target_=gavel.targets.models.Judge"], "target.arch._target_=.*: not a Architecture"),
        (["data._target_=gavel.targets.data.nowhere.Set"], "data._target_=.*: not importable; allowed data options"),
        (["device=tpu"], "device='tpu': allowed: cpu, cuda, auto"),
        (["target.train.epochs=-3"], "target.train.epochs=-3: allowed: a positive integer"),
    ],
)
def test_validate_names_the_key_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError, match=message):
        RunSettings.from_config(compose_config(overrides))


def test_settings_are_typed_values_built_once():
    """Below experiments/ nothing reads a DictConfig: the settings hold the built attack and typed specs."""
    settings = RunSettings.from_config(
        compose_config(["attack=square", "access=hidden_probabilities", "access.budget=30", "seed=4"])
    )
    assert isinstance(settings.attack_instance, Attack) and settings.attack_instance.seed == 4
    assert settings.attack.name == "square" and settings.attack.params["eps"] == 0.1
    assert isinstance(settings.access, AccessPolicy) and settings.access.budget == 30
    assert settings.access.output == "probabilities" and settings.access.weights == "hidden"
    assert settings.attack_instance.threat_model == SCORE_BASED
    assert settings.data.name == "digits" and settings.target_instance.model.arch.name == "cnn"
    surrogate = settings.surrogate_instance
    assert len(surrogate.members) == 1 and surrogate.knowledge == "same_distribution"


NEEDS = {  # what each threat model needs from the access policy, as the issue states it
    WHITE_BOX: lambda access: access == "open",
    SCORE_BASED: lambda access: access != "hidden_label",
    DECISION_BASED: lambda access: True,
    TRANSFER: lambda access: True,
    POISONING: lambda access: True,  # one query per example, under any access policy
}


@pytest.mark.parametrize("attack", group_options("attack"))
def test_access_policy_decides_which_attacks_may_run(attack):
    threat = threat_model_of(attack)  # a hybrid attacker needs what its query stage needs
    for access in group_options("access"):
        allowed = NEEDS[threat](access)
        try:
            planted = ["poison=badnets"] if threat == POISONING else []  # a backdoor attack tests a planted poison
            RunSettings.from_config(compose_config([f"attack={attack}", f"access={access}", *planted]))
            assert allowed, f"attack={attack} ran under access={access}"
        except ConfigError as error:
            assert not allowed, str(error)
            assert str(error).startswith(f"attack={attack}: ") and "allowed" in str(error)
            if threat == WHITE_BOX:  # gradient attacks refuse a hidden judge before anything runs
                assert "access.weights=hidden" in str(error)


def test_unknown_attack_parameter_is_named():
    with pytest.raises(ConfigError, match="attack.steps: not a parameter of attack=pgd; allowed: eps, eps_step"):
        RunSettings.from_config(compose_config(["+attack.steps=3"]))


@pytest.mark.parametrize(
    "args, message",
    [
        (["attack=foo"], "attack=foo: unknown option; allowed: autoattack, backdoor, .*, hopskipjump, .*, zoo"),
        (["attack=pgd,nope"], "attack=nope: unknown option; allowed:"),
        (["access.foo=1"], "access.foo: no such key; allowed keys under access: weights, output, budget"),
        (["n_example=3"], "n_example: no such key; allowed keys at the top level: "),
    ],
)
def test_check_overrides_catches_unknown_options_and_keys(args, message):
    with pytest.raises(ConfigError, match=message):
        check_overrides(args)


@pytest.mark.parametrize(
    "args",
    [
        ["--multirun", "defense=blacklight,piha", "defense.matches=1"],
        ["--multirun", "access.budget=100", "defense=knn_similarity,piha", "defense.fpr=0.01"],
    ],
)
def test_a_key_only_the_swept_options_have_is_named_with_the_override_that_works(args):
    """Hydra composes a sweep's own config from the swept group's default (defense=none) and refuses there, in a
    traceback, a key that only the swept options have."""
    key = args[-1].split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}: not a key of defense=none, .* allowed: \+\+{key}=VALUE"):
        check_overrides(args)


@pytest.mark.parametrize(
    "args",
    [
        ["--multirun", "defense=blacklight,piha", "++defense.matches=1"],  # the way to say it
        ["--multirun", "defense=blacklight,piha", "defense.matches=1,2"],  # swept too: left out of that config
        ["--multirun", "defense=blacklight", "defense.matches=1,2"],  # the group is not swept
        ["--multirun", "attack=square,hopskipjump", "attack.eps=0.05"],  # the default attack has eps too
        ["defense=blacklight", "defense.matches=1"],
    ],
)
def test_keys_the_sweeps_own_config_has_pass(args):
    check_overrides(args)
