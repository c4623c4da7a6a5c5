"""gavel's Hydra sweeper: the basic sweeper, plus grids, plus validation of every job before the first runs.

`hydra.sweeper.grid` is a list of parameter blocks; each block is swept as a Cartesian product (like
`hydra.sweeper.params`) and the blocks run one after another. An experiment whose rows are not a full
product (white box once, query attacks at three budgets) is one grid. Command-line overrides apply to every
block and win over a block's value for the same key.

Under every launcher (basic, joblib, submitit, ray), before the first job starts, the sweeper checks every job's
config, its data and judge (a foreign judge is loaded once per distinct data and target), and the tracking store,
and creates the store and the experiments once (parallel jobs on a new sqlite store would otherwise race through
MLflow's schema migration). A job that needs what the judge or the data does not offer (a white-box attack on a
judge without gradients, a transfer attack without the attacker's own data) is left out, and said so; the sweep's
summary lists it (`refused.json` in the sweep's folder). Jobs that run side by side on one machine
(joblib, submitit_local) get `threads` so that jobs x threads does not exceed the cores, unless `threads` is set.
With `resume=true` a job whose config already has a FINISHED run (tag `config_digest`) is not run again: its run
joins this sweep (its `sweep_id` tag moves here), so the sweep's table is the same as an uninterrupted sweep's.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

REFUSED = "refused.json"
"""In the sweep's folder: the jobs left out because the judge or the data cannot serve them (each `job` and `why`),
for the sweep's summary."""


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


def _short(key: str, value: str) -> str:
    """One override in a run label: a flag by its name, a number with its key's last part, anything else (a
    config-group option, a word) by its value."""
    name = key.lstrip("+~").rsplit(".", 1)[-1]
    value = value.replace("'", "").replace('"', "")  # the label travels as a quoted override value
    if value.startswith("[") and value.endswith("]"):  # a list (a stack of defenses): its members
        return "+".join(item.strip() for item in value[1:-1].split(","))
    if value.lower() == "true":
        return name
    if value.lower() == "false":
        return f"no_{name}"
    try:
        float(value)
    except ValueError:
        return value
    return f"{name}{value}"


def run_labels(jobs: List[List[str]]) -> List[str]:
    """For each job, what tells it from the sweep's other jobs: its number in the sweep (as Hydra numbers its
    output folders), then the overrides whose value differs between jobs (or that only some jobs set), the most
    specific first (those set in the fewest jobs). The MLflow UI shows about 25 characters of a run's name: the
    number keeps those apart, the values say what the run is."""
    parsed = [dict(o.lstrip("+").split("=", 1) for o in job if "=" in o and not o.startswith("~")) for job in jobs]
    keys = list(dict.fromkeys(key for overrides in parsed for key in overrides))
    varying = [key for key in keys if len({overrides.get(key) for overrides in parsed}) > 1]
    varying.sort(key=lambda key: sum(key in overrides for overrides in parsed))  # stable: ties in first-seen order
    width = len(str(len(jobs) - 1))
    return [
        " ".join([f"{number:0{width}d}", *(_short(key, overrides[key]) for key in varying if key in overrides)])
        for number, overrides in enumerate(parsed)
    ]


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
        from gavel.experiments import defense_lists

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)  # glob() sweeps need it
        jobs = expand_grid(self.grid, self.params, arguments, parser)
        seeds = self.seeds(arguments)
        if seeds > 1 and not any(o.startswith("seed=") for job in jobs for o in job):
            jobs = [[*job, f"seed={seed}"] for job in jobs for seed in range(seeds)]
        if len(jobs) >= 2:  # else nothing to tell apart
            jobs = [
                job if any(o.startswith("run_label=") for o in job) else [*job, f"run_label='{label}'"]
                for job, label in zip(jobs, run_labels(jobs))
            ]
        return [defense_lists.expand(job) for job in jobs]  # a job's defense=[...] list as its stack

    def seeds(self, arguments: List[str]) -> int:
        """`seeds` from the command line or the config (checked as an integer >= 1 with every job's config)."""
        for argument in arguments:
            if argument.startswith("seeds="):
                value = argument.split("=", 1)[1]
                return int(value) if value.isdigit() else 1  # anything else is refused by the validation below
        value = self.config.get("seeds", 1)
        return value if isinstance(value, int) and not isinstance(value, bool) else 1

    def sweep(self, arguments: List[str]) -> Any:
        from gavel.experiments import tracking
        from gavel.experiments.settings import RunSettings
        from gavel.experiments.validation import ConfigError, check_overrides, config_errors_exit

        settings = []
        with config_errors_exit():
            jobs = self.jobs(arguments)
            for job in jobs:
                try:
                    try:
                        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
                    except HydraException as error:  # a key this job's options lack (attack.bpda on square)
                        check_overrides(list(job))  # says which, in one line
                        raise ConfigError(str(error).strip().splitlines()[0]) from None
                    settings.append(RunSettings.from_config(config))
                except ConfigError as error:
                    raise ConfigError(f"{error} (in sweep job: {' '.join(job)})") from None
            jobs, settings, refused = self.judged(jobs, settings)
            tracking.prepare_store(s.experiment_name for s in settings)
        log.info("gavel sweep: %d jobs, all configs valid", len(jobs))

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / REFUSED).write_text(json.dumps(refused, indent=2))
        if settings and settings[0].resolved.get("resume"):
            jobs = self.resume(jobs, settings, tracking.sweep_id_for(sweep_dir))
        batch_size = self.max_batch_size or len(jobs) or 1
        threads = self.threads_per_job(min(batch_size, len(jobs)))
        if threads is not None:
            jobs = [job if any(o.startswith("threads=") for o in job) else [*job, f"threads={threads}"] for job in jobs]
            log.info("gavel sweep: jobs run side by side: threads=%d for each (%d cores)", threads, cores())

        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns = []
        for start in range(0, len(jobs), batch_size):
            results = self.launcher.launch(jobs[start : start + batch_size], initial_job_idx=start)
            for r in results:
                _ = r.return_value  # re-raises a failed job's exception
            returns.append(results)
        return returns

    def judged(self, jobs: List[List[str]], settings: list) -> tuple[List[List[str]], list, list[dict]]:
        """The jobs whose data and judge give them what they need, with their settings, and those left out (each with
        why). Data or a judge that cannot be used at all stops the sweep (a `SourceError` or `ConfigError`), as does a
        sweep whose every job is left out."""
        from gavel.experiments import runner
        from gavel.experiments.validation import ConfigError

        inputs: Dict[str, Any] = {}
        kept, kept_settings, refused = [], [], []
        for job, job_settings in zip(jobs, settings):
            key = json.dumps([job_settings.resolved.get(k) for k in ("data", "target", "device")], default=str)
            try:
                if key not in inputs:
                    inputs[key] = runner.load_inputs(job_settings)
                runner.check_prepared(job_settings, inputs[key])
            except runner.Unavailable as refusal:
                log.warning("gavel sweep: left out, the judge or the data cannot serve it: %s (job: %s)", refusal,
                            " ".join(job))  # fmt: skip
                refused.append({"job": " ".join(job), "why": str(refusal)})
                continue
            except ConfigError as error:
                raise ConfigError(f"{error} (in sweep job: {' '.join(job)})") from None
            kept.append(job)
            kept_settings.append(job_settings)
        if refused and not kept:
            raise ConfigError(f"{refused[0]['why']} (every job of the sweep is refused so)")
        return kept, kept_settings, refused

    def resume(self, jobs: List[List[str]], settings: list, sweep_id: str) -> List[List[str]]:
        """The jobs still to run: those without a FINISHED run of the same config. The others' runs join this
        sweep. Runs left RUNNING on this host by a process that is gone are marked FAILED first."""
        import mlflow

        from gavel.experiments import tracking

        client = mlflow.MlflowClient()
        for name in dict.fromkeys(s.experiment_name for s in settings):
            tracking.end_orphaned_runs(name)
        remaining, adopted = [], 0
        for job, job_settings in zip(jobs, settings):
            done = tracking.finished_run_with(job_settings.experiment_name, tracking.config_digest(job_settings))
            if done is None:
                remaining.append(job)
                continue
            earlier = done.data.tags.get("sweep_id")
            client.set_tag(done.info.run_id, "sweep_id", sweep_id)
            if earlier and earlier != sweep_id:
                client.set_tag(done.info.run_id, "resumed_from_sweep", earlier)
            adopted += 1
        log.info(
            "gavel sweep, resume: %d jobs already FINISHED (their runs join this sweep), %d to run",
            adopted,
            len(remaining),
        )
        return remaining

    def threads_per_job(self, side_by_side: int) -> Optional[int]:
        """torch threads for each job when the launcher runs several on this machine at once and the user has
        not set `threads`: the cores shared out (joblib's n_jobs, or a submitit_local batch); None otherwise
        (the basic launcher runs one job at a time; a Slurm job uses its allocation's cores)."""
        if OmegaConf.select(self.config, "threads", default=None) is not None or side_by_side < 1:
            return None
        target = str(OmegaConf.select(self.config, "hydra.launcher._target_", default=""))
        if target.endswith("JoblibLauncher"):
            n_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=-1) or -1
            parallel = n_jobs if n_jobs > 0 else max(1, cores() + 1 + n_jobs)  # joblib: -1 is every core
        elif target.endswith("submitit_launcher.LocalLauncher"):
            cpus = OmegaConf.select(self.config, "hydra.launcher.cpus_per_task", default=None)
            if cpus:
                return int(cpus)
            parallel = side_by_side
        else:
            return None
        return max(1, cores() // min(parallel, side_by_side))


def cores() -> int:
    return len(os.sched_getaffinity(0))
