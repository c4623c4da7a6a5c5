"""The typed config boundary: a composed Hydra config becomes one frozen `RunSettings`, once per job.

Everything below `experiments/` receives these value objects, never a `DictConfig`. Every field is typed and
range-checked here; the first value gavel cannot run with raises a `ConfigError` naming the key and what is
allowed, before anything is trained or recorded.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import os
import tempfile
import types
import typing
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gavel.attacks.base import Attack
from gavel.attacks.extraction import ExtractionSpec
from gavel.attacks.poisoning.base import Poison
from gavel.attacks.surrogate.base import Surrogate
from gavel.defenses.base import Defense
from gavel.defenses.benign import BenignMix, BenignStreamSpec
from gavel.defenses.sanitise.base import Sanitiser
from gavel.defenses.stack import DefenseStack
from gavel.experiments.config import group_options
from gavel.experiments.validation import ConfigError, Node, check_hyperparameter, hyperparameters
from gavel.targets.access import POISONING, AccessDenied, AccessPolicy
from gavel.targets.architectures.base import Architecture
from gavel.targets.data.base import DataSource
from gavel.targets.judges.base import JudgeSource
from gavel.targets.judges.panel import PanelJudge
from gavel.targets.params import SEED_MAX, BadValue, Range

DOORS = (Architecture, DataSource, JudgeSource, Surrogate, Poison, Sanitiser)
"""The kinds of component a config builds by `_target_` inside another's keys (`target.arch`)."""

NOT_HYPERPARAMETERS = ("_target_", "name")
TOP_LEVEL = (
    "experiment_name", "run_label", "seed", "seeds", "resume", "n_examples", "device", "cache_dir",
    "oracle_batch_size", "threads", "benign", "data", "target", "surrogate", "access", "attack", "defense", "poison",
    "sanitise", "serve",
)  # fmt: skip
"""The keys of conf/config.yaml, each read below: a key a config adds at the top level is a typo."""
SERVICE_ONLY = ("serve",)
"""Read by `gavel serve` alone (`experiments/serve/settings.py`): a run's result does not depend on them, so they stay
out of its resolved config (its params and `config_digest`)."""
POSITIVE = Range(above=0)


class Device(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"
    AUTO = "auto"


@dataclass(frozen=True)
class Component:
    """An attack or a defense as configured: the option's name, its class and hyperparameters, and the object
    built from them (built once, here, so that a value its constructor refuses is a config error)."""

    name: str
    cls: type
    params: Mapping[str, Any]
    instance: Any


@dataclass(frozen=True)
class RunSettings:
    experiment_name: str
    run_label: str | None
    """What tells this job from the other jobs of its sweep (set by gavel's sweeper); leads the run name."""
    seed: int
    n_examples: int
    device: Device
    cache_dir: Path
    oracle_batch_size: int
    threads: int | None
    """torch threads; None: the machine's cores, one for query attacks (`threads_for`)."""
    data: Component
    """The data source (`data=`)."""
    target: Component
    """The judge's source (`target=`): trained by gavel, or the user's own."""
    surrogate: Component
    """The attacker's surrogate and what it knows (`surrogate=`)."""
    access: AccessPolicy
    attack: Component
    defense: Component
    poison: Component
    """What the attacker's contributors put in the judge's training data (`poison=`; `none` by default)."""
    sanitise: Component
    """What the operator does to the contributed data before it trains the judge (`sanitise=`; `none`)."""
    benign: BenignStreamSpec
    """Honest traffic for a detector's false-positive rate."""
    resolved: Mapping[str, Any]
    """The resolved config as plain values, for MLflow's params and `config.yaml`."""

    def plain_config(self) -> dict[str, Any]:
        """The resolved config as plain nested values (a copy)."""
        return copy.deepcopy(dict(self.resolved))

    def threads_for(self, stage: str) -> int:
        """torch threads for a stage: `threads` if set; else one for the attack stage of a query attack on a
        library backend (its forwards hold one example's rows), the machine's cores otherwise (training,
        crafting, and gavel's batched query attacks, whose forwards hold hundreds of rows)."""
        if self.threads is not None:
            return self.threads
        attack = self.attack_instance
        query_stage = getattr(attack, "query_attack", attack)  # a hybrid attacker's queries are its query stage's
        if stage == "attack" and attack.threat_model.charged_queries and query_stage.backend != "gavel":
            return 1
        return len(os.sched_getaffinity(0))

    @property
    def attack_instance(self) -> Attack:
        return self.attack.instance

    @property
    def data_instance(self) -> DataSource:
        return self.data.instance

    @property
    def target_instance(self) -> JudgeSource:
        return self.target.instance

    @property
    def surrogate_instance(self) -> Surrogate:
        return self.surrogate.instance

    @property
    def poison_instance(self) -> Poison:
        return self.poison.instance

    @property
    def sanitiser_instance(self) -> Sanitiser:
        return self.sanitise.instance

    @property
    def defense_instance(self) -> Defense:
        return self.defense.instance

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RunSettings:
        """Read and check a composed config; raises `ConfigError` for the first value gavel cannot run with."""
        try:
            ours = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra" and key not in SERVICE_ONLY])
            resolved = OmegaConf.to_container(ours, resolve=True)
        except OmegaConfBaseException as error:
            where = error.full_key or "config"
            raise ConfigError(f"{where}: cannot be resolved ({error.msg}); allowed: a plain value") from None
        top = Node(resolved)
        unknown = sorted(set(resolved) - set(TOP_LEVEL))
        if unknown:  # a `+key=` typo adds a key gavel would never read
            raise ConfigError(f"{unknown[0]}: no such key; allowed keys at the top level: {', '.join(TOP_LEVEL)}")
        data = read_door(top.child("data"), DataSource)
        target = read_door(top.child("target"), JudgeSource)
        device = top.choice("device", Device)
        if device == Device.CUDA:
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("device=cuda: no CUDA device is available here; allowed: cpu, auto")
        seed = top.integer("seed", minimum=0, maximum=SEED_MAX)
        top.integer("seeds", minimum=1)  # read by gavel's sweeper; checked here like every key
        top.boolean("resume")  # read by gavel's sweeper; checked here like every key
        n_examples = top.integer("n_examples", minimum=1)
        oracle_batch_size = top.integer("oracle_batch_size", minimum=1)
        threads = top.integer("threads", minimum=1, optional=True, meaning="torch threads")
        experiment_name = top.text("experiment_name", meaning="a non-empty MLflow experiment name")
        run_label = top.text("run_label", optional=True, meaning="a label for the run's name")
        access = read_access(top.child("access"))
        poison = read_door(top.child("poison"), Poison)
        check_poison(poison, data, target)
        sanitise = read_door(top.child("sanitise"), Sanitiser)
        check_sanitiser(sanitise, data, target)
        attack = read_attack(top.child("attack"), seed, access, poison)
        surrogate = read_door(top.child("surrogate"), Surrogate)
        check_surrogate(surrogate, data, target, access, used=attack.instance.threat_model.surrogate)
        defense = read_defense(top.child("defense"))
        try:
            defense.instance.check(access, attack.instance.threat_model, defense.name)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        check_defense_on_panel(defense, target)
        cache_dir = read_cache_dir(top)
        benign = read_benign(top.child("benign"))
        return cls(
            experiment_name=experiment_name,
            run_label=run_label,
            seed=seed,
            n_examples=n_examples,
            device=device,
            cache_dir=cache_dir,
            oracle_batch_size=oracle_batch_size,
            threads=threads,
            data=data,
            target=target,
            surrogate=surrogate,
            access=access,
            attack=attack,
            defense=defense,
            poison=poison,
            sanitise=sanitise,
            benign=benign,
            resolved=MappingProxyType(resolved),
        )


def read_benign(node: Node) -> BenignStreamSpec:
    """The honest stream a detector is measured on (`benign`)."""
    mix = node.child("mix")
    fraction = Range(minimum=0, maximum=1)
    accounts = node.integer("accounts", minimum=1)
    queries = node.integer("queries_per_account", minimum=1)
    seed = node.integer("seed", minimum=0, maximum=SEED_MAX)
    fractions = {kind: mix.number(kind, fraction) for kind in ("fresh", "resubmit", "crop_shift", "brightness")}
    max_shift = mix.integer("max_shift", minimum=1, meaning="pixels")
    max_gain = mix.number("max_gain", Range(minimum=0, below=1))
    max_offset = mix.number("max_offset", Range(minimum=0, below=1))
    try:
        mix_spec = BenignMix(**fractions, max_shift=max_shift, max_gain=max_gain, max_offset=max_offset)
    except ValueError as error:  # the fractions must sum to 1
        reason = str(error).removeprefix("benign mix: ")
        raise ConfigError(f"benign.mix: {reason}; allowed: fractions >= 0 that sum to 1") from None
    return BenignStreamSpec(accounts=accounts, queries_per_account=queries, seed=seed, mix=mix_spec)


def _name(node: Node) -> str:
    return node.text("name", meaning="the option's name")


def read_access(node: Node) -> AccessPolicy:
    try:
        return AccessPolicy.from_mapping(dict(node.values))
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from None


def check_surrogate(surrogate: Component, data: Component, target: Component, access: AccessPolicy, used: bool) -> None:
    """What the surrogate's knowledge needs of the data and the judge; `used`: whether the attack crafts on a
    surrogate (only then must the judge's training data be known, and labels affordable)."""
    spec: Surrogate = surrogate.instance
    source: DataSource = data.instance
    if spec.knowledge == "proxy" and spec.proxy not in source.proxies:
        raise ConfigError(
            f"surrogate.proxy={spec.proxy!r}: no proxy of that name for data={data.name}; "
            f"allowed: {', '.join(source.proxies)}"
        )
    if not used:
        return
    known = target.instance.trained_on_the_data or source.names_judge_training_data
    if spec.knowledge == "leaked" and not known:
        raise ConfigError(
            f"surrogate.knowledge=leaked: the judge's training data is not known (target={target.name} was trained "
            f"elsewhere, and data={data.name} names none: data.judge_train); allowed: data=image_folder or npz with "
            "data.judge_train=PATH, or surrogate.knowledge=same_distribution, proxy or extracted"
        )
    if spec.knowledge == "extracted":
        _check_labels_can_be_bought(spec.extraction, access)


def _check_labels_can_be_bought(extraction: ExtractionSpec, access: AccessPolicy) -> None:
    """The attacker keeps one query per attacked example for the attack itself: under a budget of one, or
    account quotas of fewer than two queries in all, no label is left to buy."""
    if access.budget is not None and access.budget < 2:
        raise ConfigError(
            f"surrogate.extraction.label_budget={extraction.label_budget}: nothing left to buy labels with under "
            f"access.budget={access.budget} (one query per attacked example is kept for the attack); "
            "allowed: access.budget >= 2 or null, or another surrogate.knowledge"
        )
    if access.account_limit is not None and access.account_limit * access.accounts < 2:
        raise ConfigError(
            f"surrogate.extraction.label_budget={extraction.label_budget}: nothing left to buy labels with under "
            f"access.account_limit={access.account_limit} with access.accounts={access.accounts}; "
            "allowed: more accounts or a higher account limit, or another surrogate.knowledge"
        )


def read_component(node: Node, group: str, base: type) -> Component:
    """The class a `_target_` names, and every other key one of its typed hyperparameters."""
    name = _name(node)
    cls = _component_class(node, group, base)
    params = _hyperparameters(node, group, name, cls)
    try:
        instance = cls(**params)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{group}={name}: {error}") from None
    return Component(name, cls, MappingProxyType(params), instance)


def read_defense(node: Node) -> Component:
    """One defense (`defense=jpeg`), or a stack (`defense=[jpeg,blacklight]`, which gavel's override rewriting
    composes as `defense=_stack` with each member's config under `defense.<member>`)."""
    cls = _component_class(node, "defense", Defense)
    if not issubclass(cls, DefenseStack):
        return read_component(node, "defense", Defense)
    members = {key: value for key, value in node.values.items() if key not in NOT_HYPERPARAMETERS}
    for key, value in members.items():
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"defense.{key}={value!r}: not a member of the stack; allowed: a member's keys as "
                f"defense.MEMBER.KEY (members: {', '.join(k for k, v in members.items() if isinstance(v, Mapping))})"
            )
    read = [read_component(node.child(key), f"defense.{key}", Defense) for key in members]
    try:
        stack = DefenseStack([(component.name, component.instance) for component in read])
    except ValueError as error:
        raise ConfigError(str(error)) from None
    params = {component.name: component.params for component in read}
    return Component(stack.name, DefenseStack, MappingProxyType(params), stack)


def check_defense_on_panel(defense: Component, target: Component) -> None:
    """A detector reading the judge's penultimate layer needs one judge: a panel of several has no one layer."""
    panel = target.instance
    if not isinstance(panel, PanelJudge) or panel.members < 2:
        return
    members = (
        defense.instance.members if isinstance(defense.instance, DefenseStack) else [(defense.name, defense.instance)]
    )
    for name, member in members:
        if getattr(member, "encoder", None) == "penultimate":
            key = "defense.encoder" if name == defense.name else f"defense.{name}.encoder"
            raise ConfigError(
                f"{key}=penultimate: target=panel has {panel.members} judges and no one penultimate layer; "
                "allowed: similarity or pixels"
            )


def read_door(node: Node, base: type) -> Component:
    """A config group's option built by its `_target_` (`data`, `target`, `surrogate`): every key but `_target_`
    and `name` one of the class's typed hyperparameters, read by `read_typed` (nested doors and dataclasses too)."""
    name = _name(node)
    cls = _component_class(node, node.path, base)
    params = read_hyperparameters(node, cls, f"{node.path}={name}", skip=NOT_HYPERPARAMETERS)
    return Component(name, cls, MappingProxyType(params), _construct(cls, params, node.path, f"{node.path}={name}"))


def read_nested_door(node: Node, base: type) -> Any:
    """A door within a door (`target.arch`): its class by `_target_`, every other key a hyperparameter."""
    target = node.raw("_target_", f"an importable {base.__name__} class")
    try:
        cls = get_class(target)
    except Exception:
        raise ConfigError(f"{node.key('_target_')}={target!r}: not importable; allowed: an importable "
                          f"{base.__name__} class") from None  # fmt: skip
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise ConfigError(f"{node.key('_target_')}={target!r}: not a {base.__name__}")
    params = read_hyperparameters(node, cls, cls.__name__, skip=("_target_",))
    return _construct(cls, params, node.path, node.path)


def _construct(cls: type, params: dict, path: str, owner: str) -> Any:
    """`cls(**params)`; a value its own checks refuse is a config error naming its key."""
    try:
        return cls(**params)
    except BadValue as error:
        raise ConfigError(error.at(path)) from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{owner}: {error}") from None


def read_hyperparameters(node: Node, cls: type, owner: str, skip: tuple[str, ...]) -> dict[str, Any]:
    allowed = hyperparameters(cls)
    params = {}
    for key, value in node.values.items():
        if key in skip:
            continue
        if key not in allowed:
            raise ConfigError(f"{node.key(key)}: not a parameter of {owner}; allowed: {', '.join(allowed) or 'none'}")
        params[key] = read_typed(value, node.key(key), allowed[key])
    return params


def read_typed(value: Any, key: str, hint: Any) -> Any:
    """A config value as the type its class declares: a nested door (a class with `_target_`), a dataclass (field
    by field), a mapping of either (`Mapping[str, X]`), or a plain value checked against the type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        structured = [arg for arg in args if arg is not type(None) and _structured(arg)]
        if len(structured) == 1:
            return read_typed(value, key, structured[0])
    if _structured(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}={value!r}: allowed: a group of keys ({_what(hint)})")
        node = Node(value, key)
        if dataclasses.is_dataclass(hint):
            return read_dataclass(node, hint)
        return read_nested_door(node, hint)
    if origin in (dict, Mapping, collections.abc.Mapping) and len(args) == 2 and _structured(args[1]):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}={value!r}: allowed: a group of keys, each {_what(args[1])}")
        return {name: read_typed(item, f"{key}.{name}", args[1]) for name, item in value.items()}
    check_hyperparameter(key, value, hint)
    return value


def read_dataclass(node: Node, cls: type) -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in node.values:
        if key not in fields:
            raise ConfigError(f"{node.key(key)}: no such key; allowed keys under {node.path}: {', '.join(fields)}")
    values = {}
    for name, field in fields.items():
        if name in node.values:
            values[name] = read_typed(node.values[name], node.key(name), hints[name])
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{node.key(name)}: missing; allowed: {_what(hints[name])}")
    try:
        return cls(**values)
    except BadValue as error:
        raise ConfigError(error.at(node.path)) from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{node.path}: {error}") from None


def _structured(hint: Any) -> bool:
    """Whether values of `hint` are groups of keys gavel reads field by field: a dataclass or a door."""
    return isinstance(hint, type) and (dataclasses.is_dataclass(hint) or issubclass(hint, DOORS))


def _what(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return ", ".join(f.name for f in dataclasses.fields(hint))
    return f"_target_: an importable {hint.__name__} class, and its hyperparameters"


def read_attack(node: Node, seed: int, access: AccessPolicy, poison: Component) -> Component:
    name = _name(node)
    cls = _component_class(node, "attack", Attack)
    params = _hyperparameters(node, "attack", name, cls)
    _check_eps(node, cls.norm)
    if cls.threat_model == POISONING:
        params = _backdoor_target(params, name, poison)
    if params.get("targeted") and params.get("target_class") is None:
        raise ConfigError("attack.target_class=None: allowed: a class index (the verdict to force)")
    if node.has("query"):  # a hybrid attacker's query stage: its own class and typed hyperparameters
        query = node.child("query")
        query_cls = _component_class(query, "attack.query", Attack)
        _hyperparameters(query, "attack.query", name, query_cls, inherited=("eps", "targeted", "target_class"))
    try:
        attack = cls(**params, seed=seed)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"attack={name}: {error}") from None
    try:
        attack.check_access(access)
    except AccessDenied as denied:
        raise ConfigError(f"attack={name}: {denied}") from None
    return Component(name, cls, MappingProxyType(params), attack)


def _backdoor_target(params: dict[str, Any], name: str, poison: Component) -> dict[str, Any]:
    """A backdoor attack tests the poison planted in the judge's training data: it forces the poison's target."""
    planted: Poison = poison.instance
    if not planted.active:
        raise ConfigError(
            f"attack={name}: tests a backdoor, but poison=none planted none; allowed: poison=badnets, blend, "
            "clean_label or label_flip"
        )
    wanted = params.get("target_class")
    if wanted is not None and wanted != planted.target_class:
        raise ConfigError(
            f"attack.target_class={wanted}: the poison's trigger forces poison.target_class={planted.target_class}; "
            f"allowed: null or {planted.target_class}"
        )
    return {**params, "targeted": True, "target_class": planted.target_class}


def check_poison(poison: Component, data: Component, target: Component) -> None:
    """A poison needs a judge gavel trains (on the poisoned pool), and at most as many contributors as there are."""
    planted: Poison = poison.instance
    if not planted.active:
        return
    if not target.instance.trained_on_the_data:
        raise ConfigError(
            f"poison={poison.name}: poisons the judge's training data, but target={target.name} was trained "
            "elsewhere; allowed: a judge gavel trains (target=cnn, mlp, resnet18)"
        )
    parties = data.instance.contributors
    if planted.contributors > parties:
        raise ConfigError(
            f"poison.contributors={planted.contributors}: more than the data's {parties} contributor(s); allowed: 1 "
            f"to {parties} (or more data.contributors)"
        )


def check_sanitiser(sanitise: Component, data: Component, target: Component) -> None:
    """A sanitiser retrains a judge gavel trains, and one that reads contributors needs more than one."""
    sanitiser: Sanitiser = sanitise.instance
    if not sanitiser.active:
        return
    if not target.instance.trained_on_the_data:
        raise ConfigError(
            f"sanitise={sanitise.name}: retrains the judge on what it keeps, but target={target.name} was trained "
            "elsewhere: nothing to retrain; allowed: a judge gavel trains (target=cnn, mlp, resnet18), or sanitise=none"
        )
    if not target.instance.sanitisable:
        raise ConfigError(
            f"sanitise={sanitise.name}: reads and retrains the one judge trained on the contributed data, but "
            f"target={target.name} is several; allowed: sanitise=none"
        )
    if sanitiser.needs_contributors and data.instance.contributors < 2:
        raise ConfigError(
            f"sanitise={sanitise.name}: judges contributors, but data.contributors=1 (one party gave everything); "
            "allowed: data.contributors=2 or more"
        )


def _component_class(node: Node, group: str, base: type) -> type:
    target = node.raw("_target_", f"an importable {base.__name__} class")
    try:
        cls = get_class(target)
    except Exception:
        options = group_options(group.split(".")[0])
        raise ConfigError(
            f"{group}._target_={target!r}: not importable; allowed {group} options: {', '.join(options)}"
        ) from None
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise ConfigError(f"{group}._target_={target!r}: not a {base.__name__}")
    return cls


def _hyperparameters(node: Node, group: str, option: str, cls: type, inherited: tuple[str, ...] = ()) -> dict[str, Any]:
    allowed = hyperparameters(cls)
    params = {}
    for key, value in node.values.items():
        if key in NOT_HYPERPARAMETERS:
            continue
        if key not in allowed or key in inherited:
            names = ", ".join(n for n in allowed if n not in inherited) or "none"
            owner = group.split(".")[0]
            raise ConfigError(f"{group}.{key}: not a parameter of {owner}={option}; allowed: {names}")
        if key != "eps":  # the norm decides eps's range (_check_eps)
            check_hyperparameter(f"{group}.{key}", value, allowed[key])
        params[key] = value
    return params


def _check_eps(node: Node, norm: str | None) -> None:
    """L-inf eps within the input range; an L2 eps (or a patch's, unused) only positive and finite."""
    node.number("eps", Range(above=0, maximum=1) if norm == "inf" else POSITIVE)


def read_cache_dir(top: Node) -> Path:
    """The model cache must be writable before anything is trained into it; checked without creating it."""
    raw = top.text("cache_dir", meaning="a writable folder (or GAVEL_CACHE_DIR)")
    path = Path(raw).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        with tempfile.TemporaryDirectory(dir=existing):
            pass
    except OSError as error:
        why = error.strerror or str(error)
        raise ConfigError(f"cache_dir={raw}: cannot write there ({why}); allowed: a writable folder") from None
    return path
