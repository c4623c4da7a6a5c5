"""Where the Hydra configs live, and composing them outside a Hydra job (CLI checks, tests, benchmarks)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("data", "target", "surrogate", "access", "attack", "defense", "poison", "sanitise", "experiment")


def group_options(group: str) -> list[str]:
    """The options a user can pick; files starting with `_` are shared parts the options include."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml") if not path.stem.startswith("_"))


def compose_config(overrides: list[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """The config a `gavel run` job with these overrides would get (a `defense=[...]` list as its stack)."""
    from gavel.experiments import defense_lists  # it reads this module's group options

    overrides = defense_lists.expand(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)
    finally:
        GlobalHydra.instance().clear()
