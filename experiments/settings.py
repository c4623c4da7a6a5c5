"""The typed config boundary: a composed Hydra config becomes one frozen `RunSettings`, once per job.

Everything below `experiments/` receives these value objects, never a `DictConfig`. Every field is typed and
range-checked here; the first value gavel cannot run with raises a `ConfigError` naming the key and what is
allowed, before anything is trained or recorded.
"""

from __future__ import annotations

import copy
import os
import tempfile
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
from gavel.attacks.extraction.base import METHODS
from gavel.attacks.params import Range
from gavel.defenses.base import Defense
from gavel.defenses.benign import BenignMix, BenignStreamSpec
from gavel.experiments.config import group_options
from gavel.experiments.models import Knowledge, SurrogateSpec
from gavel.experiments.validation import SEED_MAX, ConfigError, Node, check_hyperparameter, hyperparameters
from gavel.targets.access import AccessDenied, AccessPolicy
from gavel.targets.datasets import PROXIES, DatasetName, DataSpec, PoolLimits, Split
from gavel.targets.models import Architecture, ArchName
from gavel.targets.training import ModelConfig, Recipe

NOT_HYPERPARAMETERS = ("_target_", "name")
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
class TargetSpec:
    """The judge: the option's name and its architecture and training recipe."""

    name: str
    model: ModelConfig


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
    data: DataSpec
    target: TargetSpec
    surrogate: SurrogateSpec
    access: AccessPolicy
    attack: Component
    defense: Component
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
    def defense_instance(self) -> Defense:
        return self.defense.instance

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RunSettings:
        """Read and check a composed config; raises `ConfigError` for the first value gavel cannot run with."""
        try:
            ours = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
            resolved = OmegaConf.to_container(ours, resolve=True)
        except OmegaConfBaseException as error:
            where = error.full_key or "config"
            raise ConfigError(f"{where}: cannot be resolved ({error.msg}); allowed: a plain value") from None
        top = Node(resolved)
        data = read_data(top.child("data"))
        target_node = top.child("target")
        target = TargetSpec(_name(target_node), read_model(target_node))
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
        attack = read_attack(top.child("attack"), seed, access, data.name)
        surrogate = read_surrogate(
            top.child("surrogate"), data.name, access, used=attack.instance.threat_model.surrogate
        )
        defense = read_component(top.child("defense"), "defense", Defense)
        try:
            defense.instance.check(access, attack.instance.threat_model, defense.name)
        except ValueError as error:
            raise ConfigError(str(error)) from None
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


def read_data(node: Node) -> DataSpec:
    name = node.choice("name", DatasetName)
    split_node = node.child("split")
    judge = split_node.number("judge", POSITIVE)
    attacker = split_node.number("attacker", POSITIVE)
    if name == DatasetName.DIGITS:
        split = Split(judge, attacker, split_node.number("eval", POSITIVE))
        limits = PoolLimits()
    else:
        split = Split(judge, attacker)
        limit_node = node.child("limit")
        limits = PoolLimits(
            *(limit_node.integer(pool, minimum=1, optional=True) for pool in ("judge", "attacker", "eval"))
        )
    root = node.text("root", optional=True, meaning="a folder")
    if name != DatasetName.DIGITS and root is None:
        raise ConfigError(f"data.root=None: {name} loads from a local torchvision folder; allowed: a folder")
    return DataSpec(
        name=name,
        root=root,
        download=node.boolean("download"),
        split_seed=node.integer("split_seed", minimum=0, maximum=SEED_MAX),
        split=split,
        limit=limits,
    )


def read_model(node: Node) -> ModelConfig:
    """A judge's or one surrogate member's architecture and training recipe."""
    arch = node.child("arch")
    name = arch.choice("name", ArchName)
    if name == ArchName.CNN:
        architecture = Architecture(name, width=arch.integer("width", minimum=1))
    elif name == ArchName.MLP:
        hidden = arch.raw("hidden", "a list of positive integers")
        if not isinstance(hidden, list) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden
        ):
            arch.fail("hidden", hidden, "a list of positive integers (hidden layer sizes)")
        architecture = Architecture(name, hidden=tuple(hidden))
    else:
        architecture = Architecture(name)
    train = node.child("train")
    recipe = Recipe(
        epochs=train.integer("epochs", minimum=1),
        batch_size=train.integer("batch_size", minimum=1),
        lr=train.number("lr", POSITIVE),
        weight_decay=train.number("weight_decay", Range(minimum=0)),
    )
    return ModelConfig(architecture, recipe)


def read_access(node: Node) -> AccessPolicy:
    try:
        return AccessPolicy.from_mapping(dict(node.values))
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from None


def read_surrogate(node: Node, dataset: DatasetName, access: AccessPolicy, used: bool) -> SurrogateSpec:
    """`used`: whether the attack crafts on a surrogate; only then must its labels be affordable."""
    if node.has("members"):
        members_node = node.child("members")
        names = tuple(members_node.values)
        if not names:
            raise ConfigError("surrogate.members={}: allowed: one or more members, each with arch and train")
        members = tuple(read_model(members_node.child(name)) for name in names)
    else:
        members = (read_model(node),)
    knowledge = node.choice("knowledge", Knowledge)
    fraction = node.number("data_fraction", Range(above=0, maximum=1))
    proxy = node.text("proxy", meaning="a proxy data set")
    if knowledge == Knowledge.PROXY:
        proxy = node.one_of("proxy", PROXIES[dataset])
    extraction = read_extraction(node.child("extraction"))
    if knowledge == Knowledge.EXTRACTED:
        if len(members) > 1:
            raise ConfigError(
                "surrogate=ensemble with surrogate.knowledge=extracted: each member would buy its own labels; "
                "allowed: an ensemble with leaked, same_distribution or proxy knowledge, or one extracted surrogate"
            )
        if used:
            _check_labels_can_be_bought(extraction, access)
    return SurrogateSpec(
        name=_name(node),
        members=members,
        knowledge=knowledge,
        data_fraction=fraction,
        proxy=proxy,
        proxy_root=node.text("proxy_root", optional=True, meaning="a folder"),
        extraction=extraction,
    )


def read_extraction(node: Node) -> ExtractionSpec:
    return ExtractionSpec(
        method=node.one_of("method", METHODS),
        label_budget=node.integer("label_budget", minimum=1),
        use_probability=node.boolean("use_probability"),
        sampling=node.one_of("sampling", ("random", "adaptive")),
        seed_size=node.integer("seed_size", minimum=1),
        step=node.number("step", POSITIVE),
        tau=node.integer("tau", minimum=1),
    )


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


def read_attack(node: Node, seed: int, access: AccessPolicy, dataset: DatasetName) -> Component:
    name = _name(node)
    cls = _component_class(node, "attack", Attack)
    params = _hyperparameters(node, "attack", name, cls)
    _check_eps(node, cls.norm)
    if params.get("targeted") and params.get("target_class") is None:
        raise ConfigError("attack.target_class=None: allowed: a class index (the verdict to force)")
    if params.get("targeted") and params["target_class"] >= dataset.n_classes:
        raise ConfigError(f"attack.target_class={params['target_class']}: allowed: 0 to {dataset.n_classes - 1}")
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
