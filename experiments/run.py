"""`gavel run ...`: the Hydra entry point. One job = one experiment = one MLflow run."""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from experiments import runner, tracking
from experiments.config import CONF_DIR
from experiments.settings import RunSettings
from experiments.validation import config_errors_exit


# An absolute path: run as the `gavel` console script, Hydra would otherwise look for a package named `conf`.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> dict[str, float]:
    logging.getLogger("art").setLevel(logging.WARNING)  # ART logs every attack's progress at INFO
    hydra_cfg = HydraConfig.get()
    sweep_id = tracking.sweep_id_for(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
    # Only the config and the data are config errors (one line, exit 2); from here on an error fails the run.
    with config_errors_exit():
        settings = RunSettings.from_config(cfg)
        data = runner.load_data(settings)
    return runner.run(settings, data, sweep_id=sweep_id, overrides=list(hydra_cfg.overrides.task))


if __name__ == "__main__":
    main()
