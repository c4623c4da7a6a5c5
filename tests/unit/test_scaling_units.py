"""The parts of scaling out that need no job: sharing the cores among parallel jobs, the config digest that
`resume=true` matches, the sample Slurm launcher, telling a dead process, and the store check."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import types

import mlflow
import pytest
from omegaconf import OmegaConf

from gavel.experiments import tracking
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from hydra_plugins.gavel_sweeper.gavel_sweeper import cores


def sweeper_with(*overrides: str, threads=None):
    config = compose_config(list(overrides), return_hydra_config=True)
    # Hydra's plugin scan (in compose) imports the plugin modules afresh: take the sweeper from there
    sweeper = importlib.import_module("hydra_plugins.gavel_sweeper.gavel_sweeper").GavelSweeper()
    OmegaConf.set_struct(config, False)
    config.threads = threads  # the session sets GAVEL_THREADS=1; these tests choose
    sweeper.config = config
    return sweeper


@pytest.mark.parametrize(
    "overrides, side_by_side, expected",
    [
        ((), 8, None),  # the basic launcher: one job at a time, each on every core
        (("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), 8, max(1, cores() // 2)),
        (("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), 1, cores()),  # one job left: all the cores
        (("hydra/launcher=joblib",), 8, 1),  # n_jobs=-1: a job per core
        (("hydra/launcher=submitit_local",), 2, max(1, cores() // 2)),
        (("hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=3"), 2, 3),
        (("hydra/launcher=slurm_gpu",), 8, None),  # a Slurm job uses its allocation's cores
    ],
)
def test_parallel_jobs_share_the_cores_out(overrides, side_by_side, expected):
    assert sweeper_with(*overrides).threads_per_job(side_by_side) == expected


def test_threads_set_by_the_user_are_kept():
    assert sweeper_with("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", threads=4).threads_per_job(8) is None


def test_the_sample_slurm_launcher_is_submitits_with_one_gpu():
    launcher = compose_config(["hydra/launcher=slurm_gpu"], return_hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 60)


def digest(*overrides: str) -> str:
    return tracking.config_digest(RunSettings.from_config(compose_config(list(overrides))))


def test_the_config_digest_ignores_what_belongs_to_the_sweep_and_nothing_else():
    base = digest("attack=square", "access=hidden_probabilities")
    assert base == digest("attack=square", "access=hidden_probabilities", "threads=2", "run_label='7 x'")
    assert base == digest("attack=square", "access=hidden_probabilities", "resume=true", "seeds=3", "cache_dir=/x")
    assert base != digest("attack=square", "access=hidden_probabilities", "access.budget=10")
    assert base != digest("attack=square", "access=hidden_probabilities", "seed=1")
    assert base != digest("attack=square", "access=hidden_probabilities", "n_examples=10")


def test_a_finished_process_is_told_from_a_live_one_and_from_a_reused_pid():
    me = os.getpid()
    assert tracking.process_alive(me, tracking.process_identity(me))
    assert not tracking.process_alive(me, "1")  # the same pid, another start time: another process
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    identity = tracking.process_identity(child.pid)
    assert identity is not None and tracking.process_alive(child.pid, identity)
    child.kill()
    child.wait()
    assert not tracking.process_alive(child.pid, identity)


@pytest.fixture
def tracking_uri():
    before = mlflow.get_tracking_uri()
    yield mlflow.set_tracking_uri
    mlflow.set_tracking_uri(before)


def test_the_store_check_names_the_uri_and_what_failed(tracking_uri, tmp_path):
    tracking_uri("sqlite:////proc/gavel/x.db")
    with pytest.raises(tracking.TrackingStoreError, match=r"MLFLOW_TRACKING_URI=sqlite:////proc/gavel/x.db: the "):
        tracking.check_tracking_store()
    tracking_uri(f"sqlite:///{tmp_path / 'fine.db'}")
    tracking.check_tracking_store()  # a new store is created, and answers
    assert (tmp_path / "fine.db").exists()


def test_the_store_check_restores_mlflows_retry_settings():
    before = {key: os.environ.get(key) for key in tracking.QUICK_CALLS}
    with tracking.quick_store_calls():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert {key: os.environ.get(key) for key in tracking.QUICK_CALLS} == before


@pytest.mark.parametrize("stop, signum", [("Terminated", signal.SIGTERM), ("KeyboardInterrupt", signal.SIGINT)])
def test_a_stop_python_swallowed_in_a_finalizer_is_sent_again(stop, signum):
    """A SIGTERM or Ctrl-C raised inside a weakref callback is only printed ("Exception ignored"): the hook sends the
    signal again, so the job stops where it is then."""
    from gavel.experiments import run

    caught = threading.Event()
    previous = signal.signal(signum, lambda *_: caught.set())
    try:
        exception = run.Terminated("stopped") if stop == "Terminated" else KeyboardInterrupt()
        run.redeliver_swallowed_stops(types.SimpleNamespace(exc_value=exception))
        assert caught.wait(timeout=5)
    finally:
        signal.signal(signum, previous)
