"""Config checks: one clear line naming the key and what is allowed, before anything is trained or recorded.

`check_overrides` reads the command line before Hydra starts a job; `Node` reads one config node at the typed
boundary (`experiments.settings`), each getter checking a type and a range; `check_hyperparameter` checks a
value against the type an attack or defense declares in its `__init__` signature.
"""

from __future__ import annotations

import sys
import typing
from contextlib import contextmanager
from enum import StrEnum
from typing import Any, Mapping, Sequence, TypeVar

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from gavel.experiments.config import CONF_DIR, GROUPS, compose_config, group_options
from gavel.targets.errors import SourceError
from gavel.targets.params import Range, conforms, declared_hyperparameters, describe_type, is_int, is_number


class ConfigError(ValueError):
    """A config value that gavel cannot run with. The message names the key and what is allowed."""


@contextmanager
def config_errors_exit():
    """Turn a config or data error into one line on stderr and exit status 2, before anything is written."""
    try:
        yield
    except (ConfigError, FileNotFoundError, SourceError) as error:
        print(f"gavel: {error}", file=sys.stderr)
        sys.exit(2)


def check_overrides(args: list[str]) -> None:
    """Name an unknown config-group option, an unknown key, a removed key or a syntax error in one line,
    before Hydra starts a job."""
    from gavel.experiments import defense_lists  # it raises ConfigError, from here

    overrides = [a for a in args if "=" in a and not a.startswith("-") or a.startswith("~")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as error:
        first = str(error).strip().splitlines()[0]
        raise ConfigError(f"{_culprit(overrides)}: not a valid override ({first}); allowed: KEY=VALUE") from None
    group_choices: list[str] = []
    fixed_choices: list[str] = []  # the groups chosen once, not swept
    swept_groups: list[str] = []
    value_overrides = []
    changed: list[str] = []
    for override in parsed:
        key = override.key_or_group
        if key == "hydra/launcher":
            allowed = launcher_options()
            for value in override.sweep_string_iterator() if override.is_sweep_override() else [override.value()]:
                if str(value) not in allowed:
                    raise ConfigError(f"hydra/launcher={value}: unknown launcher; allowed: {', '.join(allowed)}")
            continue
        if key.startswith(("hydra.", "hydra/")) or key == "hydra":
            continue
        if override.is_delete():
            raise ConfigError(
                f"~{key}: gavel needs every key and config group; allowed: {key}=VALUE to change it"
                + (f" (options: {', '.join(group_options(key))})" if key in GROUPS else "")
            )
        if override.package is not None and key in GROUPS:  # a stack's member at its own package (defense_lists)
            group_choices.append(override.input_line)
            continue
        if override.type in (OverrideType.ADD, OverrideType.FORCE_ADD):  # `+key=`/`++key=`: the key need not exist
            continue
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        if key in GROUPS:
            allowed = group_options(key)
            for value in values:
                if key == "defense" and value == defense_lists.STACK_OPTION:
                    continue
                if key == "defense" and defense_lists.members(value) is not None:
                    defense_lists.check_members(defense_lists.members(value))
                    continue
                if value not in allowed and not (key == "experiment" and value == "null"):
                    raise ConfigError(f"{key}={value}: unknown option; allowed: {', '.join(allowed)}")
            if defense_lists.members(values[0]) is not None:  # the sweep's own config, from a list's stack
                group_choices.extend(defense_lists.expand([f"{key}={values[0]}"]))
            else:
                group_choices.append(f"{key}={values[0]}")
            if override.is_sweep_override():
                swept_groups.append(key)
            else:
                fixed_choices.append(f"{key}={values[0]}")
        else:
            value_overrides.append(key)
            # Hydra leaves swept values out of the sweep's own config, and `+`/`++` add the key where it is missing:
            # only a plain `key=value` is applied to the swept group's default option there.
            if override.type == OverrideType.CHANGE and not override.is_sweep_override():
                changed.append(key)
    try:
        base = compose_config(group_choices)
    except HydraException as error:
        raise ConfigError(f"{' '.join(group_choices)}: {str(error).strip().splitlines()[0]}") from None
    for key in value_overrides:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base, parent) if parent else base
        if not isinstance(node, DictConfig) or leaf not in node:
            if parent == "attack" and leaf in ADAPTIVE_WHITE_BOX:
                raise ConfigError(
                    f"{key}: attack={node.get('name')} reads no gradients of the served model, so it has none to "
                    f"approximate or average; allowed: {key} on a white-box attack ({', '.join(white_box_options())})"
                )
            where = f" under {parent}" if parent else " at the top level"
            allowed = ", ".join(node.keys()) if isinstance(node, DictConfig) else "none"
            raise ConfigError(f"{key}: no such key; allowed keys{where}: {allowed}")
    if swept_groups:
        _check_against_the_sweeps_own_config(changed, swept_groups, fixed_choices)


def _check_against_the_sweeps_own_config(keys: list[str], swept_groups: list[str], fixed_choices: list[str]) -> None:
    """Before it sweeps a config group, Hydra composes the sweep's own config from that group's default option
    and applies every other override to it: a key that only the swept options have (defense.matches, swept over
    defense=blacklight,piha while the default defense is none) fails there, in a Hydra traceback. Say so in one
    line, with the override that sets it in every job instead."""
    sweep_level = compose_config(fixed_choices)
    for key in keys:
        group = next((g for g in swept_groups if key.startswith(f"{g}.")), None)
        if group is None or OmegaConf.select(sweep_level, key, default=_MISSING) is not _MISSING:
            continue
        default = OmegaConf.select(sweep_level, f"{group}.name", default="its default")
        raise ConfigError(
            f"{key}: not a key of {group}={default}, the option Hydra composes the sweep's own config from before "
            f"it sweeps {group}; allowed: ++{key}=VALUE (sets it in every job)"
        )


ADAPTIVE_WHITE_BOX = ("bpda", "eot_samples")
"""A white-box attack's adaptive keys (BPDA, EOT on the served model's gradients)."""


def white_box_options() -> list[str]:
    """The attack options that differentiate the served model (they have `bpda`)."""
    return [name for name in group_options("attack") if "bpda:" in (CONF_DIR / "attack" / f"{name}.yaml").read_text()]


def launcher_options() -> list[str]:
    """The Hydra launchers installed here (`hydra/launcher=...`): basic, and the plugins' (joblib, submitit_local,
    submitit_slurm, and ray where its package is installed)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
    return sorted(loader.get_group_options("hydra/launcher"))


def _culprit(overrides: list[str]) -> str:
    """The first override the parser refuses on its own, or all of them."""
    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except OverrideParseException:
            return override
    return " ".join(overrides)


_MISSING = object()
E = TypeVar("E", bound=StrEnum)


class Node:
    """One config node, read at the boundary: every getter checks the value's type and range and raises a
    `ConfigError` naming the dotted key and what is allowed."""

    def __init__(self, values: Mapping, path: str = "") -> None:
        self.values = values
        self.path = path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.values and self.values[name] is not None

    def raw(self, name: str, allowed: str):
        value = self.values.get(name, _MISSING)
        if value is _MISSING:
            raise ConfigError(f"{self.key(name)}: missing; allowed: {allowed}")
        return value

    def child(self, name: str) -> Node:
        value = self.raw(name, "a group of keys")
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self.key(name)}={value!r}: allowed: a group of keys")
        return Node(value, self.key(name))

    def fail(self, name: str, value, allowed: str) -> typing.NoReturn:
        raise ConfigError(f"{self.key(name)}={value!r}: allowed: {allowed}")

    def integer(
        self,
        name: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        optional: bool = False,
        meaning: str = "",
    ) -> int | None:
        allowed = _integer_words(minimum, maximum) + (f" ({meaning})" if meaning else "")
        allowed += " or null" if optional else ""
        value = self.raw(name, allowed)
        if value is None and optional:
            return None
        if not is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.fail(name, value, allowed)
        return int(value)

    def number(self, name: str, range_: Range, *, optional: bool = False) -> float | None:
        allowed = f"a number {range_.describe()}" + (" or null" if optional else "")
        value = self.raw(name, allowed)
        if value is None and optional:
            return None
        if not is_number(value) or not range_.holds(float(value)):
            self.fail(name, value, allowed)
        return float(value)

    def boolean(self, name: str) -> bool:
        value = self.raw(name, "true or false")
        if not isinstance(value, bool):
            self.fail(name, value, "true or false")
        return value

    def text(self, name: str, *, optional: bool = False, meaning: str = "text") -> str | None:
        allowed = meaning + (" or null" if optional else "")
        value = self.raw(name, allowed)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
            self.fail(name, value, allowed)
        return str(value)

    def choice(self, name: str, options: type[E]) -> E:
        allowed = ", ".join(option.value for option in options)
        value = self.raw(name, allowed)
        try:
            return options(value)
        except ValueError:
            self.fail(name, value, allowed)

    def one_of(self, name: str, options: Sequence[str]) -> str:
        value = self.raw(name, ", ".join(options))
        if value not in options:
            self.fail(name, value, ", ".join(options))
        return value


def _integer_words(minimum: int | None, maximum: int | None) -> str:
    if minimum == 1 and maximum is None:
        return "a positive integer"
    if minimum is not None and maximum is not None:
        return f"an integer from {minimum} to {maximum}"
    if minimum is not None:
        return f"an integer >= {minimum}"
    return "an integer"


def hyperparameters(cls: type) -> dict[str, Any]:
    """The hyperparameters of an attack or defense class, each with its declared type (an attack's own
    `parameters()`, which a transfer attack extends with its crafter's)."""
    return cls.parameters() if hasattr(cls, "parameters") else declared_hyperparameters(cls.__mro__)


def check_hyperparameter(key: str, value, hint) -> None:
    """Raise `ConfigError` unless `value` has the declared type `hint` (bool, int, float, str, Literal,
    Sequence, Mapping, `X | None`, and `Annotated[..., Range]`)."""
    if not conforms(value, hint):
        raise ConfigError(f"{key}={value!r}: allowed: {describe_type(hint)}")
