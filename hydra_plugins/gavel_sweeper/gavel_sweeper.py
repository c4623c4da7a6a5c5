"""gavel's Hydra sweeper: the basic sweeper, plus grids, plus validation of every job before the first runs.

`hydra.sweeper.grid` is a list of parameter blocks; each block is swept as a Cartesian product (like
`hydra.sweeper.params`) and the blocks run one after another. An experiment whose rows are not a full
product (white box once, query attacks at three budgets) is one grid. Command-line overrides apply to every
block and win over a block's value for the same key.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def expand_grid(
    grid: List[Dict[str, Any]], params: Dict[str, str], arguments: List[str], parser: OverridesParser | None = None
) -> List[List[str]]:
    """Each job's overrides: every block of the grid (plus `params`) swept as a product, blocks one after
    another, identical jobs once; a command-line override replaces a block's value for the same key."""
    parser = parser or OverridesParser.create()
    command_line_keys = {o.get_key_element() for o in parser.parse_overrides(arguments)}
    jobs: List[List[str]] = []
    for block in grid or [{}]:
        preset = {**(params or {}), **block}
        strings = [f"{k}={v}" for k, v in preset.items() if k not in command_line_keys] + list(arguments)
        for job in BasicSweeper.split_arguments(parser.parse_overrides(strings), None)[0]:
            if job not in jobs:
                jobs.append(job)
    return jobs


class GavelSweeper(BasicSweeper):
    def __init__(
        self,
        max_batch_size: Optional[int] = None,
        params: Optional[Dict[str, str]] = None,
        grid: Optional[List[Dict[str, Any]]] = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.grid = [dict(block) for block in grid] if grid else [{}]

    def jobs(self, arguments: List[str]) -> List[List[str]]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)  # glob() sweeps need it
        return expand_grid(self.grid, self.params, arguments, parser)

    def sweep(self, arguments: List[str]) -> Any:
        from experiments.settings import RunSettings
        from experiments.validation import ConfigError, config_errors_exit

        jobs = self.jobs(arguments)
        with config_errors_exit():
            for job in jobs:
                try:
                    RunSettings.from_config(self.hydra_context.config_loader.load_sweep_config(self.config, list(job)))
                except ConfigError as error:
                    raise ConfigError(f"{error} (in sweep job: {' '.join(job)})") from None
        log.info("gavel sweep: %d jobs, all configs valid", len(jobs))

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        batch_size = self.max_batch_size or len(jobs)
        returns = []
        for start in range(0, len(jobs), batch_size):
            results = self.launcher.launch(jobs[start : start + batch_size], initial_job_idx=start)
            for r in results:
                _ = r.return_value  # re-raises a failed job's exception
            returns.append(results)
        return returns
