"""Config checks that run before anything is trained: one clear line naming the key and what is allowed."""
from __future__ import annotations

import inspect
import sys
from contextlib import contextmanager

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from attacks.base import Attack
from attacks.extraction import METHODS
from defenses.base import Defense
from experiments.config import GROUPS, compose_config, group_options
from experiments.models import KNOWLEDGE
from targets.datasets import DATASETS, PROXIES
from targets.models import ARCHITECTURES
from targets.oracle import AccessDenied, AccessPolicy

DEVICES = ("cpu", "cuda", "auto")
CONFIG_KEYS_NOT_PASSED_TO_CONSTRUCTORS = ("_target_", "name")


class ConfigError(ValueError):
    """A config value that gavel cannot run with. The message names the key and what is allowed."""


@contextmanager
def config_errors_exit():
    """Turn a config or data error into one line on stderr and exit status 2, before anything is written."""
    try:
        yield
    except (ConfigError, FileNotFoundError) as error:
        print(f"gavel: {error}", file=sys.stderr)
        sys.exit(2)


def check_overrides(args: list[str]) -> None:
    """Name an unknown config-group option or an unknown key in one line, before Hydra starts a job."""
    parsed = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
    group_choices: list[str] = []
    value_overrides = []
    for override in parsed:
        key = override.key_or_group
        if key.startswith(("hydra.", "hydra/", "+", "~")) or key == "hydra":
            continue
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        if key in GROUPS:
            allowed = group_options(key)
            for value in values:
                if value not in allowed and not (key == "experiment" and value == "null"):
                    raise ConfigError(f"{key}={value}: unknown option; allowed: {', '.join(allowed)}")
            group_choices.append(f"{key}={values[0]}")
        else:
            value_overrides.append(key)
    base = compose_config(group_choices)
    for key in value_overrides:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base, parent) if parent else base
        if not isinstance(node, DictConfig) or leaf not in node:
            where = f" under {parent}" if parent else " at the top level"
            allowed = ", ".join(node.keys()) if isinstance(node, DictConfig) else "none"
            raise ConfigError(f"{key}: no such key; allowed keys{where}: {allowed}")


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` for the first value gavel cannot run with."""
    _check_choice("data.name", cfg.data.name, DATASETS)
    _check_choice("target.arch.name", cfg.target.arch.name, ARCHITECTURES)
    _check_recipe("target", cfg.target.train)
    _check_surrogate(cfg.surrogate, cfg.data.name)
    _check_choice("device", cfg.device, DEVICES)
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device=cuda: no CUDA device is available here; allowed: cpu, auto")
    _check_positive_int("n_examples", cfg.n_examples)
    _check_positive_int("oracle_batch_size", cfg.oracle_batch_size)
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ConfigError(f"seed={cfg.seed!r}: allowed: an integer")
    try:
        policy = AccessPolicy.from_config(cfg.access)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    attack_cls = _check_component("attack", cfg.attack, Attack)
    _check_component("defense", cfg.defense, Defense)
    eps = cfg.attack.get("eps")
    if attack_cls.norm == "inf" and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps <= 1):
        raise ConfigError(f"attack.eps={eps!r}: allowed: a number in (0, 1] (L-inf, inputs in [0, 1])")
    if attack_cls.norm == "2" and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0):
        raise ConfigError(f"attack.eps={eps!r}: allowed: a positive number (L2, inputs in [0, 1])")
    target_class = cfg.attack.get("target_class")
    if cfg.attack.get("targeted") and (not isinstance(target_class, int) or target_class < 0):
        raise ConfigError(f"attack.target_class={target_class!r}: allowed: a class index (the verdict to force)")
    try:
        attack = attack_cls(**constructor_kwargs(cfg.attack), seed=cfg.seed)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"attack={cfg.attack.name}: {error}") from None
    try:
        attack.check_access(policy)
    except AccessDenied as denied:
        raise ConfigError(f"attack={cfg.attack.name}: {denied}") from None


def constructor_kwargs(node: DictConfig) -> dict:
    return {k: v for k, v in node.items() if k not in CONFIG_KEYS_NOT_PASSED_TO_CONSTRUCTORS}


def _check_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: allowed: {', '.join(allowed)}")


def _check_positive_int(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r}: allowed: a positive integer")


def _check_surrogate(node: DictConfig, dataset: str) -> None:
    members = node.members.items() if node.get("members") else [(None, node)]
    for name, member in members:
        prefix = "surrogate" if name is None else f"surrogate.members.{name}"
        _check_choice(f"{prefix}.arch.name", member.arch.name, ARCHITECTURES)
        _check_recipe(prefix, member.train)
    _check_choice("surrogate.knowledge", node.knowledge, KNOWLEDGE)
    fraction = node.data_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"surrogate.data_fraction={fraction!r}: allowed: a number in (0, 1]")
    if node.knowledge == "proxy" and dataset in PROXIES:
        _check_choice(f"surrogate.proxy (data={dataset})", node.proxy, PROXIES[dataset])
    if node.knowledge == "extracted":
        _check_choice("surrogate.extraction.method", node.extraction.method, METHODS)
        _check_positive_int("surrogate.extraction.label_budget", node.extraction.label_budget)
        _check_choice("surrogate.extraction.sampling", node.extraction.sampling, ("random", "adaptive"))
        _check_positive_int("surrogate.extraction.seed_size", node.extraction.seed_size)
        _check_positive_int("surrogate.extraction.tau", node.extraction.tau)
        if node.get("members"):
            raise ConfigError(
                "surrogate=ensemble with surrogate.knowledge=extracted: each member would buy its own labels; "
                "allowed: an ensemble with leaked, same_distribution or proxy knowledge, or one extracted surrogate"
            )


def _check_recipe(role: str, train: DictConfig) -> None:
    for key in ("epochs", "batch_size"):
        _check_positive_int(f"{role}.train.{key}", train[key])
    if not isinstance(train.lr, (int, float)) or train.lr <= 0:
        raise ConfigError(f"{role}.train.lr={train.lr!r}: allowed: a positive number")


def keyword_parameters(cls: type) -> list[str]:
    """Keyword-only constructor parameters of `cls` and the classes it passes `**kwargs` on to (`seed` is the
    experiment's, not the component's)."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        for name, p in inspect.signature(klass.__init__).parameters.items():
            if p.kind is p.KEYWORD_ONLY and name != "seed" and name not in names:
                names.append(name)
    return names


def _check_component(group: str, node: DictConfig, base: type) -> type:
    """The class a `_target_` names, and that every other key is one of its keyword arguments."""
    try:
        cls = get_class(node._target_)
    except Exception:
        raise ConfigError(
            f"{group}._target_={node._target_!r}: not importable; allowed {group} options: "
            f"{', '.join(group_options(group))}"
        ) from None
    if not issubclass(cls, base):
        raise ConfigError(f"{group}._target_={node._target_!r}: not a {base.__name__}")
    allowed = keyword_parameters(cls)
    for key in constructor_kwargs(node):
        if key not in allowed:
            raise ConfigError(
                f"{group}.{key}: not a parameter of {group}={node.name}; allowed: {', '.join(allowed) or 'none'}"
            )
    return cls
