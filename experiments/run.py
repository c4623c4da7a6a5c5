"""`gavel run ...`: the Hydra entry point. One job = one experiment = one MLflow run."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path

import hydra
import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import DictConfig

from gavel.experiments import runner, stops, tracking
from gavel.experiments.config import CONF_DIR
from gavel.experiments.settings import RunSettings
from gavel.experiments.stops import Terminated
from gavel.experiments.validation import config_errors_exit

__all__ = ["Terminated", "main", "register_sweeper", "stop_on_sigterm"]


REDELIVERY_DELAY_S = 0.05


def redeliver_swallowed_stops(unraisable) -> None:
    """`sys.unraisablehook`: a stop (SIGTERM, or Ctrl-C's SIGINT) that lands while Python runs a finalizer or a weakref
    callback (SQLAlchemy's collect them as a run starts) is raised in there, and Python prints it as "Exception
    ignored" and goes on: the job would run to its end. The signal is sent again a moment later, to stop the job
    where it is then. Any other unraisable exception goes to the hook that was there before."""
    stop = unraisable.exc_value
    if isinstance(stop, KeyboardInterrupt):
        signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
        threading.Timer(REDELIVERY_DELAY_S, os.kill, (os.getpid(), signum)).start()
        return
    _previous_unraisablehook(unraisable)


_previous_unraisablehook = sys.unraisablehook


def stop_on_sigterm() -> None:
    """Install the stop handler for SIGTERM and SIGINT (`experiments.stops`; only the main thread of a process can),
    and the hook that sends a stop again where Python swallowed it."""
    if threading.current_thread() is threading.main_thread():
        stops.install()
        sys.unraisablehook = redeliver_swallowed_stops


def register_sweeper() -> None:
    """Hydra finds plugins by listing the `hydra_plugins` folders on sys.path. An editable install maps
    `hydra_plugins.gavel_sweeper` through an import hook that such a listing cannot see, so gavel registers its
    sweeper itself, after Hydra's scan (the scan re-executes the plugin modules it finds: a class imported before
    it would be stale). Where the scan found it (a wheel), this registers the same class again."""
    plugins = Plugins.instance()
    from hydra_plugins.gavel_sweeper.gavel_sweeper import GavelSweeper

    plugins.register(GavelSweeper)


# An absolute path: run as the `gavel` console script, Hydra would otherwise look for a package named `conf`.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> dict[str, float]:
    logging.getLogger("art").setLevel(logging.WARNING)  # ART logs every attack's progress at INFO
    stop_on_sigterm()  # in a launcher's worker process too
    hydra_cfg = HydraConfig.get()
    sweep_id = tracking.sweep_id_for(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
    # Only the config, the data and a foreign judge are config errors (one line, exit 2); from here on an error fails
    # the run.
    try:
        with config_errors_exit():
            settings = RunSettings.from_config(cfg)
            prepared = runner.prepare(settings)
            if hydra_cfg.mode == RunMode.RUN:  # a sweep checked the store before its first job (gavel's sweeper)
                tracking.check_tracking_store()
    except SystemExit:
        if hydra_cfg.mode == RunMode.RUN:  # a refused run leaves nothing behind, not even Hydra's folder for it
            remove_output_folder(Path(hydra_cfg.runtime.output_dir), hydra_cfg.job.name)
        raise
    try:
        metrics = runner.run(settings, prepared, sweep_id=sweep_id, overrides=list(hydra_cfg.overrides.task))
    except tracking.TrackingStoreError as error:  # the store refused the run: nothing was trained or recorded
        print(f"gavel: {error}", file=sys.stderr)
        if hydra_cfg.mode == RunMode.RUN:
            remove_output_folder(Path(hydra_cfg.runtime.output_dir), hydra_cfg.job.name)
        sys.exit(2)
    if hydra_cfg.mode == RunMode.RUN:  # a sweep prints its table and where its runs are (reports.summary)
        print(where_the_run_is(settings.experiment_name))
    return metrics


def where_the_run_is(experiment: str) -> str:
    run = mlflow.last_active_run()
    uri = mlflow.get_tracking_uri()
    return (
        f"MLflow: run {run.info.run_id} ({run.info.run_name}) in experiment '{experiment}' at {uri}\n"
        f"        browse it with: mlflow ui --backend-store-uri {uri}, then {tracking.runs_page(experiment)}"
    )


HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
"""What Hydra saves in `<run folder>/.hydra/` when a job starts."""


def remove_output_folder(folder: Path, job_name: str) -> None:
    """Hydra's folder for a refused run, only when it holds nothing but what Hydra wrote for this job (its saved
    config and its log); then, with Hydra's default layout (`outputs/<date>/<time>`), the date folder and
    `outputs/` above it when they are left empty. A folder holding anything else (a `hydra.run.dir` the user
    pointed at an existing folder, another run's files) is left as it is."""
    hydra_dir, log = folder / ".hydra", folder / f"{job_name}.log"
    try:
        ours = {p.name for p in folder.iterdir()} <= {".hydra", log.name} and (
            not hydra_dir.exists() or {p.name for p in hydra_dir.iterdir()} <= set(HYDRA_FILES)
        )
    except OSError:
        return
    if not ours:
        return
    for name in HYDRA_FILES:
        (hydra_dir / name).unlink(missing_ok=True)
    log.unlink(missing_ok=True)
    for empty in (hydra_dir, folder):
        try:
            empty.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return
    date = folder.parent
    if date.parent.name == "outputs" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", date.name):
        for empty in (date, date.parent):  # only if empty: other runs stay
            try:
                empty.rmdir()
            except OSError:
                break


if __name__ == "__main__":
    main()
