"""`defense=[jpeg,blacklight,labels_only]`: a list of defenses, deployed as one stack (`defenses/stack.py`).

Hydra reads a list for a config group as a multi-select and merges the options into one node, so their keys
(`_target_`, `name`) would overwrite each other. gavel rewrites such an override before Hydra composes it: the
stack option (`conf/defense/_stack.yaml`) plus each member at a package of its own,

    defense=[jpeg,labels_only]  ->  defense=_stack  +defense@defense.jpeg=jpeg  +defense@defense.labels_only=labels_only

so that each member keeps its own defaults and its keys are set as `defense.jpeg.quality=30`. A one-member list
is that defense (`defense=[jpeg]` is `defense=jpeg`). Sweeps over lists (`defense=[jpeg,labels_only],none`) are
rewritten job by job, after gavel's sweeper has split them.
"""

from __future__ import annotations

from typing import Any, Iterable

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import OverrideParseException

from gavel.experiments.config import group_options
from gavel.experiments.validation import ConfigError

STACK_OPTION = "_stack"


def members(value: Any) -> list[str] | None:
    """The defenses a `defense=` value lists (a parsed list, or its text `[a,b]`); None for a single name."""
    if isinstance(value, str):
        text = value.strip()
        if not (text.startswith("[") and text.endswith("]")):
            return None
        value = [item.strip().strip("'\"") for item in text[1:-1].split(",") if item.strip()]
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    return None


def check_members(names: list[str]) -> None:
    """Refuse (ConfigError, one line) a list that names an unknown defense, `none`, or one defense twice."""
    shown = f"defense=[{','.join(names)}]"
    allowed = [option for option in group_options("defense") if option != "none"]
    if not names:
        raise ConfigError(f"{shown}: an empty list; allowed: defense=none, or a list of {', '.join(allowed)}")
    for name in names:
        if name == "none":
            raise ConfigError(f"{shown}: none is no defense, not a member; allowed in a list: {', '.join(allowed)}")
        if name not in allowed:
            raise ConfigError(f"{shown}: unknown defense {name}; allowed in a list: {', '.join(allowed)}")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"{shown}: {', '.join(twice)} listed twice; allowed: each defense once")


def _list_override(override: Override) -> list[str] | None:
    if override.key_or_group != "defense" or override.package or override.is_sweep_override():
        return None
    return members(override.value())


def expand(overrides: Iterable[str]) -> list[str]:
    """The overrides with a `defense=[...]` list rewritten as the stack it means (checked); the rest as they were.
    A sweep over lists is left as it is, for the sweeper to split first."""
    parser = OverridesParser.create()
    out: list[str] = []
    for text in overrides:
        names = None
        if "=" in text and not text.startswith(("-", "~")):
            try:
                (parsed,) = parser.parse_overrides([text])
            except OverrideParseException:  # not an override at all: the CLI's checks say so, in one line
                parsed = None
            names = None if parsed is None else _list_override(parsed)
        if names is None:
            out.append(text)
            continue
        check_members(names)
        if len(names) == 1:
            out.append(f"defense={names[0]}")
            continue
        out.append(f"defense={STACK_OPTION}")
        out.extend(f"+defense@defense.{name}={name}" for name in names)
    return out
